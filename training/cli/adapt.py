"""Handler of ``python -m training adapt``: a public data set -> the input contract's tables."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

__all__ = ["cmd_adapt"]


def cmd_adapt(args: argparse.Namespace) -> int:
    from training.datasets.adapters import adapt

    source: Path = args.source
    if not source.exists():
        print(
            f"adapt: {source} not found (the public file of {args.dataset}; see docs/training.md)"
        )
        return 1
    t0 = time.perf_counter()
    counts = adapt(args.dataset, source, args.out)
    print(f"\n{args.dataset} -> {args.out} in {time.perf_counter() - t0:.1f}s (contract tables)")
    for table, n in counts.items():
        print(f"  {table:<10} {n:>9,} rows")
    print(f"next: python -m training ingest --source {args.out}")
    return 0
