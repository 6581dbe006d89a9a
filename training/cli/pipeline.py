"""CLI stages after the feature store: train, promote, export-bundle, bank.

``register`` is called by :mod:`training.cli`; ``all`` runs train, promote and
export-bundle after generate and feature-store.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from training.settings import MODELS_DIR, ROOT

__all__ = ["register"]

Handler = Callable[[argparse.Namespace], int]
AddArgs = Callable[[argparse.ArgumentParser], None]
DEFAULT_BANK = ROOT.parent / "shared" / "data" / "bank_marketing" / "bank-additional-full.csv.gz"


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-rows",
        type=int,
        default=None,
        help="cap the entity rows per model (seeded uniform sample); default: all",
    )
    p.add_argument(
        "--extra-log",
        type=Path,
        default=None,
        help="export-log folder: the service's decisions with outcomes as extra training rows "
        "(weights 1/choice_probability; test = the newest 20%% of the log)",
    )
    if not any(a.dest == "seed" for a in p._actions):
        p.add_argument("--seed", type=int, default=42, help="random seed")


def _promote_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--strict", action="store_true", help="exit non-zero when a candidate is refused"
    )


def _bundle_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=MODELS_DIR, help="bundle folder (models/)")
    p.add_argument(
        "--bundle-alias",
        default="champion",
        help="registry alias to export (candidate: a bundle for offline evaluation)",
    )


def cmd_train(args: argparse.Namespace) -> int:
    from training.pipeline.train import train

    t0 = time.perf_counter()
    r = train(
        max_rows=getattr(args, "max_rows", None),
        seed=getattr(args, "seed", 42),
        extra_log=getattr(args, "extra_log", None),
    )
    log_rows = r.dataset.params.get("log_rows")
    if log_rows is not None:
        parts = []
        for kind, d in r.dataset.models.items():
            is_log = d.meta["message_id"].astype(str).str.startswith("L").to_numpy()
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
    print(
        "timings: "
        + ", ".join(f"{k} {v:.1f}" for k, v in r.timings.items())
        + f"; train stage {time.perf_counter() - t0:.1f}s"
    )
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from training.pipeline.registry import promote

    rc, decisions = promote(strict=getattr(args, "strict", False))
    print("\nPromotion (candidate -> champion)")
    for kind, reasons in decisions.items():
        if not reasons:
            print(f"  {kind:<11} promoted (or already champion)")
        else:
            print(f"  {kind:<11} refused: " + "; ".join(reasons))
    return rc


def cmd_export_bundle(args: argparse.Namespace) -> int:
    from training.pipeline.bundle import BundleError, export_bundle

    out: Path = getattr(args, "out", MODELS_DIR)
    try:
        manifest = export_bundle(out, getattr(args, "bundle_alias", "champion"))
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


def _bank_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--path", type=Path, default=DEFAULT_BANK, help="bank-additional-full.csv[.gz]")


def register(stages: dict[str, tuple[str, Handler, AddArgs | None]], all_after: list[str]) -> None:
    for add in (_train_args, _promote_args, _bundle_args):
        setattr(add, "also_for_all", True)  # noqa: B010
    stages["train"] = (
        "build Feast datasets, fit, evaluate, export ONNX, register candidates in MLflow",
        cmd_train,
        _train_args,
    )
    stages["promote"] = ("move the champion alias if the gates pass", cmd_promote, _promote_args)
    stages["export-bundle"] = (
        "champion ONNX models + manifest.json into models/ (or --out)",
        cmd_export_bundle,
        _bundle_args,
    )
    stages["bank"] = ("UCI Bank Marketing adapter: train + AUC", cmd_bank, _bank_args)
    all_after.extend(["train", "promote", "export-bundle"])
