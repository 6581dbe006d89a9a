"""``python -m training taste``: add the per-category taste features to an existing world's
behaviour snapshots (``generate`` adds them itself; training/datasets/taste.py)."""

from __future__ import annotations

import argparse
import time
from typing import Any

__all__ = ["add_parser", "cmd_taste"]


def cmd_taste(args: argparse.Namespace) -> int:
    from training.datasets.taste import add_taste, taste_columns
    from training.settings import paths

    t0 = time.perf_counter()
    n = add_taste(paths().data_dir)
    print(f"{len(taste_columns())} taste columns on {n:,} behaviour rows in "
          f"{time.perf_counter() - t0:.1f}s -> {paths().data_dir}")  # fmt: skip
    return 0


def add_parser(sub: Any, command: Any) -> None:
    command(
        "taste",
        "add the per-category taste features to the world's behaviour snapshots",
        cmd_taste,
    )
