"""Handlers of the pipeline commands: generate, ingest, features, feature-store, train,
promote, rollback, export-bundle, bank, and ``all`` (generate -> ingest -> features ->
feature-store -> train -> promote -> export-bundle). The argument tree is
:mod:`training.cli.parser`.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from training.settings import paths

__all__ = [
    "cmd_all",
    "cmd_bank",
    "cmd_export_bundle",
    "cmd_feature_store",
    "cmd_features",
    "cmd_figures",
    "cmd_generate",
    "cmd_ingest",
    "cmd_promote",
    "cmd_rollback",
    "cmd_train",
]


def _print_table(title: str, rows: dict[str, Any]) -> None:
    width = max(len(k) for k in rows)
    print(f"\n{title}")
    print("-" * len(title))
    for k, v in rows.items():
        print(f"  {k:<{width}}  {v:,}" if isinstance(v, int) else f"  {k:<{width}}  {v}")


def cmd_generate(args: argparse.Namespace) -> int:
    """The synthetic world's raw tables, then the path every data set takes: ingest, features."""
    from training.datasets.world import WorldConfig, generate_world

    cfg = WorldConfig(n_customers=args.customers, seed=args.seed)
    out = paths().data_dir
    t0 = time.perf_counter()
    counts = generate_world(cfg, out)
    _print_table(
        f"Synthetic world (seed {cfg.seed}) in {time.perf_counter() - t0:.1f}s -> {out / 'source'}",
        counts,
    )
    args.source = out / "source"
    args.as_of = cfg.end_ts.isoformat()
    args.vocabulary = None
    rc = cmd_ingest(args)
    return rc or cmd_features(args)


def cmd_ingest(args: argparse.Namespace) -> int:
    from training.ingest import IngestError, format_report, ingest

    source: Path = args.source
    as_of = datetime.fromisoformat(args.as_of) if args.as_of else None
    if as_of is not None and as_of.tzinfo is None:
        print(f"ingest: --as-of {args.as_of!r} needs a UTC offset (e.g. +00:00)", file=sys.stderr)
        return 2
    if not source.is_dir():
        print(f"ingest: --source {source} is not a folder", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        report = ingest(source, paths().data_dir, as_of=as_of, vocabulary=args.vocabulary)
    except IngestError as exc:
        print(f"ingest: {exc}", file=sys.stderr)
        return 2
    print()
    print(format_report(report))
    print(f"\n  {time.perf_counter() - t0:.1f}s; report: {paths().data_dir / 'ingest_report.json'}")
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    from training.features import compute_features
    from training.ingest import IngestError

    t0 = time.perf_counter()
    try:
        run = compute_features(
            paths().data_dir, engine=getattr(args, "engine", "duckdb"), every_days=args.every_days
        )
    except IngestError as exc:
        print(f"features: {exc}", file=sys.stderr)
        return 2
    rows: dict[str, Any] = {f"{k} rows": v for k, v in run.rows.items()}
    rows["snapshots"] = (
        f"{len(run.snapshots)}, every {args.every_days} days, "
        f"{run.snapshots[0].isoformat()} .. {run.snapshots[-1].isoformat()}"
    )
    rows["engine"] = run.engine
    _print_table(
        f"Feature views from raw/ in {time.perf_counter() - t0:.1f}s -> "
        f"{paths().data_dir / 'features'}",
        rows,
    )
    return 0


def cmd_feature_store(args: argparse.Namespace) -> int:
    from training.ingest import IngestError, history_window
    from training.pipeline.featurestore import apply, clear_online, materialize
    from training.settings import redis_url

    try:
        _, end = history_window(paths().data_dir)
    except IngestError as exc:
        print(f"feature-store: {exc}", file=sys.stderr)
        return 2
    stores = ["sqlite", "redis"] if args.online == "both" else [args.online]
    for online in stores:
        t0 = time.perf_counter()
        if args.fresh:
            clear_online(online)
        views = apply(online)
        materialize(online, end=end)
        where = str(paths().feast / "online.db") if online == "sqlite" else redis_url()
        _print_table(
            f"Feature store ({online}) applied and materialized in {time.perf_counter() - t0:.1f}s",
            {
                "feature views": ", ".join(views),
                "feature services": "propensity_v1, send_time_v1, channel_v1",
                "online store": where,
                "registry": str(paths().feast / "registry.db"),
                "materialized as of": end.isoformat(),
            },
        )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from training.pipeline.train import train

    t0 = time.perf_counter()
    r = train(max_rows=args.max_rows, seed=args.seed, extra_log=args.extra_log)
    log_rows = r.dataset.params.get("log_rows")
    if log_rows is not None:
        parts = []
        for kind, d in r.dataset.models.items():
            is_log = d.from_log
            parts.append(f"{kind} {int((is_log & d.train).sum()):,} train / "
                         f"{int((is_log & d.test).sum()):,} test")  # fmt: skip
        print(
            f"\nretrained with {log_rows:,} rows from the decision log (models with log rows "
            f"are tested from {r.dataset.params['log_test_start']}): " + ", ".join(parts)
        )
    print(f"\nEvaluation on the held-out later period (MLflow run {r.run_id})")
    print(r.table)
    print(
        "\nONNX parity: "
        + ", ".join(
            f"{k} {p.rows:,} rows max|diff| {p.max_abs_diff:.1e}" for k, p in r.parity.items()
        )
    )
    print("registered (alias candidate): " + ", ".join(f"{k} v{v}" for k, v in r.versions.items()))
    if r.champion_same_rows:
        print(
            "champion on these test rows (for the promotion gates): "
            + "; ".join(f"{k} {v}" for k, v in r.champion_same_rows.items())
        )
    print(
        "timings: "
        + ", ".join(f"{k} {v:.1f}" for k, v in r.timings.items())
        + f"; train stage {time.perf_counter() - t0:.1f}s"
    )
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from training.pipeline.registry import promote

    rc, decisions = promote(strict=args.strict)
    print("\nPromotion (candidate -> champion)")
    for kind, reasons in decisions.items():
        if not reasons:
            print(f"  {kind:<11} promoted (or already champion)")
        else:
            print(f"  {kind:<11} refused: " + "; ".join(reasons))
    return rc


def cmd_rollback(args: argparse.Namespace) -> int:
    from training.pipeline.registry import REGISTERED_NAMES, rollback

    kinds = list(REGISTERED_NAMES) if args.model == "all" else [args.model]
    done = rollback(kinds)
    print("\nRollback (champion -> the previous champion)")
    for kind, r in done.items():
        if r.reason:
            print(f"  {kind:<11} refused: {r.reason}")
        else:
            print(f"  {kind:<11} v{r.from_version} -> v{r.to_version}")
    return 1 if any(r.reason for r in done.values()) else 0


def cmd_figures(args: argparse.Namespace) -> int:
    """Copy the evaluation plots of each model's registered version (the alias) out of MLflow."""
    import shutil
    import tempfile

    import mlflow

    from training.pipeline.registry import REGISTERED_NAMES, client, setup_mlflow, version_by_alias

    setup_mlflow()
    c = client()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    missing = []
    for kind in REGISTERED_NAMES:
        v = version_by_alias(c, kind, args.alias)
        if v is None:
            missing.append(kind)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            got = Path(
                mlflow.artifacts.download_artifacts(
                    run_id=v.run_id, artifact_path="plots", dst_path=tmp
                )
            )
            for png in sorted(got.glob("*.png")):
                shutil.copyfile(png, out / png.name)
                print(f"  {kind:<11} v{v.version}  {out / png.name}")
    for kind in missing:
        print(f"  {kind:<11} no version has the alias {args.alias!r}")
    return 1 if missing else 0


def cmd_export_bundle(args: argparse.Namespace) -> int:
    from training.pipeline.bundle import BundleError, export_bundle

    out: Path = args.out
    try:
        manifest = export_bundle(out, args.bundle_alias)
    except BundleError as exc:
        print(f"export-bundle: {exc}")
        return 1
    print(f"\nModel bundle -> {out}")
    for kind, m in manifest["models"].items():
        print(f"  {kind:<11} {m['registered_name']} v{m['version']} ({m['file']})")
    return 0


def cmd_bank(args: argparse.Namespace) -> int:
    from training.datasets.bank import run_bank

    path: Path = args.path
    if not path.exists():
        print(f"bank: {path} not found (download UCI Bank Marketing, pass --path)")
        return 1
    res: dict[str, Any] = run_bank(path)
    print("\nUCI Bank Marketing (time-ordered split, first 90% train / last 10% test)")
    for k, v in res.items():
        print(f"  {k:<22} {v}")
    return 0


def cmd_all(args: argparse.Namespace) -> int:
    """The main job: generate (-> ingest -> features), feature-store (fresh), train, promote,
    export-bundle."""
    t0 = time.perf_counter()
    print(f"nextbest main job, {datetime.now().isoformat(timespec='seconds')}")
    args.fresh = True  # a new world: rows of an earlier one must not survive in the stores
    rc = 0
    for stage in (cmd_generate, cmd_feature_store, cmd_train, cmd_promote, cmd_export_bundle):
        rc = stage(args)
        if rc:
            break
    print(f"\nmain job finished in {time.perf_counter() - t0:.1f}s (exit {rc})")
    return rc
