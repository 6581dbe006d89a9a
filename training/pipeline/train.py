"""The ``train`` stage: Feast datasets -> LightGBM -> evaluation -> ONNX (parity) -> MLflow.

One parent MLflow run per invocation (``train-<UTC time>``) holds the run's parameters
(seed, row cap, data window, LightGBM parameters), the world's configuration (tag
``world``), the evaluation table of all three models, the timings and
``bundle/manifest.json``. Under it, one nested run per model (named after it) logs only that
model: its parameters and dataset fingerprint, its metrics and baseline metrics
(``<model>.<metric>``, ``<model>.baseline_<name>.<metric>``), its plots, its feature order,
the ONNX model (registered, alias ``candidate``), the same model as LightGBM text, and a
copy of ``bundle/manifest.json`` (what ``export-bundle`` and the service's MLflow loader read
from a model version's run). So a registered model version carries its own metrics only.
Each version also gets a description (what, data window, headline metric vs the best
baseline) and tags naming its features (see :mod:`training.pipeline.registry`).

When a model has a champion, the champion (resolved through the alias, with its own feature
list) is scored on this run's held-out rows only, by the same evaluation code, and its
metrics are logged in the model's run as ``<model>.champion_same_rows.<metric>`` with the tag
``champion_same_rows.version``: the ``<metric>_vs_champion`` promotion gates then compare the
two models on the same rows (a log-trained candidate is tested on a harder set than the
champion's own test period). A champion that cannot be scored on these rows (it needs a
feature they lack, another vocabulary) is skipped with the reason in the tag
``champion_same_rows.skipped`` and in the log.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import pandas as pd

from contracts.features import DEFAULT_SPEC
from training.pipeline.dataset import (
    KINDS,
    SERVICES,
    Dataset,
    ModelData,
    build_datasets,
    fingerprint,
)
from training.pipeline.evaluate import (
    EvalResult,
    Scorer,
    evaluate_all,
    format_table,
    same_rows_metrics,
    train_priors,
)
from training.pipeline.models import PARAMS, fit
from training.pipeline.onnx_export import (
    ParityResult,
    check_parity,
    onnx_session,
    score_onnx,
    to_onnx,
)
from training.pipeline.registry import (
    CANDIDATE,
    CHAMPION,
    CHAMPION_TOLERANCE,
    REGISTERED_NAMES,
    SAME_ROWS,
    describe_version,
    feature_tags,
    setup_mlflow,
    version_by_alias,
)
from training.settings import paths

__all__ = ["FEATURES", "TrainError", "TrainResult", "load_truth", "offers_json", "train"]

FEATURES: dict[str, list[str]] = {k: list(v) for k, v in DEFAULT_SPEC.model_features.items()}
EXAMPLE_ROWS = 5

_log = logging.getLogger(__name__)


class TrainError(ValueError):
    """The data cannot train a model (too few rows, one outcome only): says which and why."""


def check_rows(kind: str, d: ModelData) -> None:
    """Refuse, with the reason, a model whose training or test rows cannot fit or score it."""
    y_tr, n_te = d.y[d.train], int(d.test.sum())
    what = {"propensity": "opened sends (label converted)"}.get(
        kind, "delivered sends (label opened)"
    )
    if len(y_tr) < 20 or n_te == 0:
        raise TrainError(
            f"{kind}: {len(y_tr)} training and {n_te} test rows of {what} after the "
            "point-in-time join: too few to train and hold out (need at least 20 and 1; "
            "check that features/ covers the send times)"
        )
    if len(np.unique(y_tr)) < 2:
        raise TrainError(
            f"{kind}: every training row of {what} has the same outcome ({int(y_tr[0])}); "
            "the model needs both outcomes in the data"
        )


def load_truth() -> Any | None:
    """The synthetic world's ground truth when the data folder has it (``truth/``, or the
    older layout's files at its top), else None: real data has none, and training never
    needs it (ground-truth metrics are then simply not computed)."""
    from training.datasets.world import World

    root = paths().data_dir
    has_config = (root / "world.json").exists() or (root / "truth" / "world.json").exists()
    has_truth = any((f / "truth_customers.parquet").exists() for f in (root / "truth", root))
    if not (has_config and has_truth):
        return None
    try:
        return World.load(root)  # reads truth/ (or the older layout's files at the top)
    except (FileNotFoundError, OSError):
        return None


@dataclass
class TrainResult:
    run_id: str  # the parent run
    results: dict[str, EvalResult]
    parity: dict[str, ParityResult]
    versions: dict[str, str]
    manifest: dict[str, Any]
    table: str
    timings: dict[str, float]
    models: dict[str, Any]  # the fitted LightGBM classifiers
    dataset: Dataset
    run_ids: dict[str, str]  # model -> its nested run (the run of its registered version)
    # model -> the champion scored on this run's test rows ("v3: auc 0.5812, ...") or why not
    champion_same_rows: dict[str, str] = field(default_factory=dict)


def offers_json(offers: pd.DataFrame) -> list[dict[str, Any]]:
    rows: list[dict[Any, Any]] = offers.to_dict("records")
    return [
        {
            "offer_id": str(o["offer_id"]),
            "name": str(o["name"]),
            "category": str(o["category"]),
            "category_idx": int(o["category_idx"]),
            "price": float(o["price"]),
            "margin": float(o["margin"]),
            "valid_from": pd.Timestamp(o["valid_from"]).isoformat(),
            "valid_to": pd.Timestamp(o["valid_to"]).isoformat(),
        }
        for o in rows
    ]


def _example_rows(x: npt.NDArray[np.float32], n: int = EXAMPLE_ROWS) -> npt.NDArray[np.float32]:
    """A few test rows for the manifest, preferring rows without missing values."""
    full = np.flatnonzero(~np.isnan(x).any(axis=1))
    idx = full[:n] if len(full) >= n else np.arange(min(n, len(x)))
    out: npt.NDArray[np.float32] = x[idx]
    return out


def _json_floats(a: npt.NDArray[Any]) -> list[Any]:
    rows: list[Any] = a.astype(np.float64).tolist()
    return rows


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(v)}


@dataclass(frozen=True)
class ChampionSameRows:
    """The champion of one model scored on the candidate's held-out rows (``metrics``, run
    tags), or skipped (``metrics`` empty, the reason in ``tags``)."""

    kind: str
    metrics: dict[str, float]
    tags: dict[str, str]

    @property
    def summary(self) -> str:
        skipped = self.tags.get(f"{SAME_ROWS}.skipped")
        if skipped is not None:
            return f"skipped: {skipped}"
        shown = ", ".join(
            f"{k} {self.metrics[k]:.4f}" for k in CHAMPION_TOLERANCE[self.kind] if k in self.metrics
        )
        return f"v{self.tags[f'{SAME_ROWS}.version']}: {shown}"


def _skip(kind: str, reason: str, quiet: bool = False) -> ChampionSameRows:
    if not quiet:
        _log.warning("%s: champion not scored on the candidate's test rows: %s", kind, reason)
    return ChampionSameRows(kind, {}, {f"{SAME_ROWS}.skipped": reason})


def champion_same_rows(c: Any, ds: Dataset, kind: str, seed: int = 42) -> ChampionSameRows:
    """Score the current champion of ``kind`` (``models:/<name>@champion``, its own feature
    list) on the held-out rows of ``ds``, with the evaluation's own metric code."""
    import mlflow
    from mlflow.exceptions import MlflowException

    name = REGISTERED_NAMES[kind]
    mv = version_by_alias(c, kind, CHAMPION)
    if mv is None:
        return _skip(kind, f"{name} has no '{CHAMPION}' yet", quiet=True)
    version = str(mv.version)
    ours = list(ds.spec.model_features[kind])
    try:
        theirs_tag = mv.tags.get("features")
        if theirs_tag:
            theirs = theirs_tag.split(",")
        else:  # the feature order logged in the champion's run
            blob = Path(c.download_artifacts(mv.run_id, f"features/{kind}.json")).read_text()
            theirs = list(json.loads(blob)["features"])
        params = c.get_run(mv.run_id).data.params
    except (MlflowException, OSError, KeyError, ValueError) as e:
        return _skip(kind, f"the feature list of champion v{version} is not readable ({e})")
    missing = [f for f in theirs if f not in ours]
    if missing:
        return _skip(
            kind,
            f"champion v{version} needs features the candidate's test rows lack: "
            + ", ".join(missing),
        )
    for vocab, now in (("channels", ds.spec.channels), ("categories", ds.spec.categories)):
        then = params.get(f"vocabulary.{vocab}")
        if then is not None and then != ",".join(now):
            return _skip(
                kind,
                f"champion v{version} was trained with other {vocab} ({then}; now "
                f"{','.join(now)}): its encoded inputs would mean other things",
            )
    try:
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}@{CHAMPION}"))
        files = sorted(local.rglob("*.onnx"))
        if not files:
            return _skip(kind, f"{name}@{CHAMPION}: no .onnx file in the logged model")
        sess = onnx_session(files[0].read_bytes())
    except (MlflowException, OSError) as e:
        return _skip(kind, f"{name}@{CHAMPION} could not be loaded ({e})")
    width = sess.get_inputs()[0].shape[-1]
    if isinstance(width, int) and width != len(theirs):
        return _skip(
            kind,
            f"champion v{version} takes {width} inputs but lists {len(theirs)} features",
        )
    scorer = Scorer(
        lambda x: score_onnx(sess, x), np.asarray([ours.index(f) for f in theirs], np.int64)
    )
    metrics = _finite(same_rows_metrics(ds, kind, scorer, seed))
    return ChampionSameRows(
        kind, metrics, {f"{SAME_ROWS}.version": version, f"{SAME_ROWS}.run_id": str(mv.run_id)}
    )


def _requirements() -> list[str]:
    """Pinned runtime requirements (saves MLflow inferring them by importing the model)."""
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("onnx", "onnxruntime", "numpy")]


def train(
    max_rows: int | None = None,
    seed: int = 42,
    progress: bool = True,
    extra_log: Path | None = None,
) -> TrainResult:
    """The train stage; ``extra_log``: an export-log folder whose decisions with outcomes join
    the training rows (inverse-propensity weights; see training/pipeline/dataset.py)."""
    import mlflow
    import onnx
    import onnxruntime
    from mlflow.models import infer_signature
    from tqdm import tqdm

    from training.pipeline.featurestore import feature_store

    os.environ.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")
    onnxruntime.set_default_logger_severity(3)
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    store = feature_store()
    extra = None
    if extra_log is not None:
        from training.measurement.log_training import messages_from_log

        extra = messages_from_log(extra_log)
    ds: Dataset = build_datasets(
        store, max_rows=max_rows, seed=seed, progress=progress, extra=extra
    )
    timings["feast_join_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    features = {k: list(v) for k, v in ds.spec.model_features.items()}
    models: dict[str, Any] = {}
    for kind in tqdm(KINDS, desc="fit LightGBM", disable=not progress):
        d = ds.models[kind]
        check_rows(kind, d)
        models[kind] = fit(
            d.x[d.train],
            d.y[d.train],
            features[kind],
            {"random_state": seed},
            d.weight[d.train],
            groups=d.from_log[d.train],  # history and log rows each give their newest to validation
        )
    timings["fit_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    world = load_truth()
    plot_dir = Path(tempfile.mkdtemp(prefix="nextbest-plots-"))
    results = evaluate_all(ds, models, world, plot_dir, seed)
    timings["evaluate_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    onnx_models: dict[str, onnx.ModelProto] = {}
    parity: dict[str, ParityResult] = {}
    for kind in tqdm(KINDS, desc="ONNX export + parity", disable=not progress):
        d = ds.models[kind]
        onnx_models[kind] = to_onnx(models[kind], len(features[kind]))
        parity[kind] = check_parity(models[kind], onnx_models[kind], d.x[d.test], seed=seed)
        results[kind].metrics["parity_max_abs_diff"] = parity[kind].max_abs_diff
        results[kind].metrics["parity_passed"] = 1.0 if parity[kind].passed else 0.0
    timings["onnx_s"] = time.perf_counter() - t0

    table = format_table(results)
    priors = train_priors(ds)
    t0 = time.perf_counter()
    setup_mlflow()
    c = mlflow.MlflowClient()
    t1 = time.perf_counter()
    champions = {kind: champion_same_rows(c, ds, kind, seed) for kind in KINDS}
    timings["champion_same_rows_s"] = time.perf_counter() - t1
    versions: dict[str, str] = {}
    run_ids: dict[str, str] = {}
    manifest_models: dict[str, dict[str, Any]] = {}
    run_params = {
        "seed": seed,
        "max_rows": ds.params["max_rows"],
        "extra_log": str(extra_log) if extra_log is not None else "none",
        "test_share": 0.2,
        "split": ds.params["split"],
        "ground_truth": "yes" if world is not None else "no",
        "vocabulary.channels": ",".join(ds.spec.channels),
        "vocabulary.categories": ",".join(ds.spec.categories),
        **{f"data.{k}": v for k, v in ds.window.items()},
        **{f"lgbm.{k}": v for k, v in PARAMS.items() if k != "random_state"},
    }
    world_file = paths().data_dir / "world.json"
    world_json = world_file.read_text() if world_file.exists() else "none (not a synthetic world)"
    with mlflow.start_run(run_name=f"train-{datetime.now(UTC):%Y%m%d-%H%M%S}") as run:
        mlflow.log_params(run_params)
        mlflow.set_tag("world", world_json)
        for kind in KINDS:
            d = ds.models[kind]
            r = results[kind]
            with mlflow.start_run(run_name=kind, nested=True) as child:
                mlflow.set_tags({"model": kind, "world": world_json})
                mlflow.log_params(run_params)
                mlflow.log_params(
                    {
                        f"{kind}.feature_service": SERVICES[kind],
                        f"{kind}.train_rows": int(d.train.sum()),
                        f"{kind}.test_rows": int(d.test.sum()),
                        f"{kind}.best_iteration": int(models[kind].best_iteration_ or 0),
                        f"{kind}.dataset_fingerprint": fingerprint(d.x[d.train], d.y[d.train]),
                        f"{kind}.log_rows_train": int((d.from_log & d.train).sum()),
                        f"{kind}.log_rows_test": int((d.from_log & d.test).sum()),
                    }
                )
                mlflow.log_metrics(_finite(r.flat()))
                same = champions[kind]
                mlflow.log_metrics({f"{kind}.{SAME_ROWS}.{k}": v for k, v in same.metrics.items()})
                mlflow.set_tags(same.tags)
                for path in r.plots.values():
                    mlflow.log_artifact(str(path), artifact_path="plots")
                mlflow.log_dict({"features": features[kind]}, f"features/{kind}.json")
                example = _example_rows(d.x[d.test])
                sess = onnx_session(onnx_models[kind])
                expected = score_onnx(sess, example)
                probs = np.stack([1 - expected, expected], axis=1).astype(np.float32)
                sig = infer_signature({"input": example}, {"probabilities": probs})
                info = mlflow.onnx.log_model(
                    onnx_models[kind],
                    name=kind,
                    signature=sig,
                    input_example={"input": example},
                    registered_model_name=REGISTERED_NAMES[kind],
                    pip_requirements=_requirements(),
                    onnx_execution_providers=["CPUExecutionProvider"],
                )
                # the same model as LightGBM text (best iteration), for the benchmark's
                # baseline (`Booster.predict` in a web handler); the service serves the ONNX
                mlflow.log_text(models[kind].booster_.model_to_string(), f"lightgbm/{kind}.txt")
                run_ids[kind] = child.info.run_id
            version = str(info.registered_model_version)
            name = REGISTERED_NAMES[kind]
            c.set_registered_model_alias(name, CANDIDATE, version)
            c.update_model_version(
                name,
                version,
                description=describe_version(
                    kind,
                    _finite(r.metrics),
                    {b: _finite(m) for b, m in r.baselines.items()},
                    ds.window,
                    SERVICES[kind],
                    len(features[kind]),
                ),
            )
            tags = {
                **feature_tags(features[kind]),
                "feature_service": SERVICES[kind],
                "train_run": run.info.run_id,
            }
            for key, value in tags.items():
                c.set_model_version_tag(name, version, key, value)
            versions[kind] = version
            blob = onnx_models[kind].SerializeToString()
            manifest_models[kind] = {
                "registered_name": name,
                "version": version,
                "alias": CANDIDATE,
                "file": f"{kind}.onnx",
                "sha256": hashlib.sha256(blob).hexdigest(),
                "features": features[kind],
                "feature_service": SERVICES[kind],
                "metrics": _finite(r.metrics),
                "baselines": {b: _finite(m) for b, m in r.baselines.items()},
                "input_example": _json_floats(example),
                "expected_output": [float(v) for v in expected],
            }
        manifest = {
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "data_window": ds.window,
            "models": manifest_models,
            "offers": offers_json(ds.offers),
            "priors": priors,
            "vocabulary": msgspec.to_builtins(ds.spec.vocabulary),
        }
        mlflow.log_dict(manifest, "bundle/manifest.json")
        for child_id in run_ids.values():  # where a model version's run is looked up
            c.log_dict(child_id, manifest, "bundle/manifest.json")
        mlflow.log_text(table, "evaluation/table.txt")
        mlflow.log_dict({k: round(v, 2) for k, v in timings.items()}, "timings.json")
        run_id = run.info.run_id
    timings["mlflow_s"] = time.perf_counter() - t0
    return TrainResult(
        run_id,
        results,
        parity,
        versions,
        manifest,
        table,
        timings,
        models,
        ds,
        run_ids,
        {kind: same.summary for kind, same in champions.items()},
    )


def manifest_json(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, indent=2)
