"""`python -m training <command>`: the offline pipeline in one CLI.

Commands (each a stage; `all` runs the main job end to end on embedded defaults):
  generate        synthetic customer world -> Parquet under NEXTBEST_DATA_DIR
  feature-store   feast apply + materialize into the online store (sqlite or redis)
  all             generate, feature-store (and every later stage registered below)
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from training.settings import paths

# Quiet default for a terminal user; override from the environment.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

Handler = Callable[[argparse.Namespace], int]


def _print_table(title: str, rows: dict[str, Any]) -> None:
    width = max(len(k) for k in rows)
    print(f"\n{title}")
    print("-" * len(title))
    for k, v in rows.items():
        print(f"  {k:<{width}}  {v:,}" if isinstance(v, int) else f"  {k:<{width}}  {v}")


def cmd_generate(args: argparse.Namespace) -> int:
    from training.datasets.world import WorldConfig, generate_world

    cfg = WorldConfig(n_customers=args.customers, seed=args.seed)
    out = paths().data
    t0 = time.perf_counter()
    counts = generate_world(cfg, out)
    _print_table(
        f"Synthetic world (seed {cfg.seed}) in {time.perf_counter() - t0:.1f}s -> {out}", counts
    )
    return 0


def cmd_feature_store(args: argparse.Namespace) -> int:
    from training.datasets.world import WorldConfig
    from training.pipeline.featurestore import apply, clear_online, materialize

    cfg = json.loads((paths().data / "world.json").read_text())
    end = WorldConfig(**cfg).end_ts
    stores = ["sqlite", "redis"] if args.online == "both" else [args.online]
    for online in stores:
        t0 = time.perf_counter()
        if getattr(args, "fresh", False):
            clear_online(online)
        views = apply(online)
        materialize(online, end=end)
        where = (
            str(paths().feast / "online.db")
            if online == "sqlite"
            else __import__("training.settings", fromlist=["redis_url"]).redis_url()
        )
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


#: Later stages register themselves here (name -> (help, handler, add_arguments)).
STAGES: dict[str, tuple[str, Handler, Callable[[argparse.ArgumentParser], None] | None]] = {}
#: Stages `all` runs after the feature store, in order.
ALL_AFTER_FEATURE_STORE: list[str] = []


def _register_optional_stages() -> None:
    import contextlib

    with contextlib.suppress(ImportError):
        from training.cli import pipeline

        pipeline.register(STAGES, ALL_AFTER_FEATURE_STORE)
    from training.cli import measurement

    measurement.register(STAGES)


def cmd_all(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    print(f"nextbest main job, {datetime.now().isoformat(timespec='seconds')}")
    args.fresh = True  # a new world: rows of an earlier one must not survive in the stores
    rc = cmd_generate(args) or cmd_feature_store(args)
    for name in ALL_AFTER_FEATURE_STORE:
        if rc:
            break
        rc = STAGES[name][1](args)
    print(f"\nmain job finished in {time.perf_counter() - t0:.1f}s (exit {rc})")
    return rc


def build_parser() -> argparse.ArgumentParser:
    _register_optional_stages()
    p = argparse.ArgumentParser(prog="python -m training", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def world_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--customers", type=int, default=100_000, help="world size")
        sp.add_argument("--seed", type=int, default=42, help="random seed")

    def store_args(sp: argparse.ArgumentParser, default: str = "sqlite") -> None:
        sp.add_argument(
            "--online",
            choices=["sqlite", "redis", "both"],
            default=default,
            help="online store to materialize into",
        )

    g = sub.add_parser("generate", help="generate the synthetic customer world")
    world_args(g)
    g.set_defaults(func=cmd_generate)
    fs = sub.add_parser("feature-store", help="feast apply + materialize")
    store_args(fs)
    fs.add_argument(
        "--fresh",
        action="store_true",
        help="clear the online store's rows first (after the source data changed)",
    )
    fs.set_defaults(func=cmd_feature_store)
    a = sub.add_parser("all", help="the main job, end to end")
    world_args(a)
    store_args(a)
    for name, (help_, handler, add_args) in STAGES.items():
        sp = sub.add_parser(name, help=help_)
        if add_args:
            add_args(sp)
            add_args_to_all = getattr(add_args, "also_for_all", False)
            if add_args_to_all:
                add_args(a)
        sp.set_defaults(func=handler)
    a.set_defaults(func=cmd_all)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rc: int = args.func(args)
    return rc
