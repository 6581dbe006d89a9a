"""MLflow tracking and model registry: log a training run, register versions, gate promotion.

Registered models: ``nextbest-propensity``, ``nextbest-send-time``, ``nextbest-channel``.
``train`` gives each new version the alias ``candidate``; ``promote`` moves ``champion`` to
the candidate only when every gate passes (:func:`check_gates`). Versions are always
resolved through aliases, never by number.

Gates, per model:
  * the ONNX parity check passed;
  * the primary metric beats the best baseline by ``margin`` (``GATES``);
  * no key metric is worse than the current champion's by more than its tolerance
    (``CHAMPION_TOLERANCE``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from training.settings import paths

__all__ = [
    "CANDIDATE",
    "CHAMPION",
    "CHAMPION_TOLERANCE",
    "EXPERIMENT",
    "GATES",
    "REGISTERED_NAMES",
    "Gate",
    "artifact_root",
    "check_gates",
    "client",
    "run_metrics",
    "setup_mlflow",
    "tracking_uri",
]

EXPERIMENT = "nextbest"
CANDIDATE = "candidate"
CHAMPION = "champion"
REGISTERED_NAMES: dict[str, str] = {
    "propensity": "nextbest-propensity",
    "send_time": "nextbest-send-time",
    "channel": "nextbest-channel",
}


@dataclass(frozen=True)
class Gate:
    metric: str
    higher_is_better: bool
    margin: float  # required advantage over the best baseline


GATES: dict[str, list[Gate]] = {
    "propensity": [Gate("auc", True, 0.01), Gate("regret_conversion", False, 0.0)],
    # hit rate must beat the best baseline (no margin); the ground-truth regret decides
    "send_time": [Gate("top3_hit_rate", True, 0.0), Gate("regret_open", False, 0.0)],
    "channel": [Gate("logloss", False, 0.001), Gate("regret_open", False, 0.0)],
}
#: metric -> (higher is better, absolute tolerance vs the current champion)
CHAMPION_TOLERANCE: dict[str, dict[str, tuple[bool, float]]] = {
    "propensity": {"auc": (True, 0.005), "logloss": (False, 0.005), "ece": (False, 0.01)},
    "send_time": {"top1_hit_rate": (True, 0.01), "top3_hit_rate": (True, 0.01)},
    "channel": {"logloss": (False, 0.005), "top1_accuracy_opted_in": (True, 0.01)},
}


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{paths().mlflow / 'mlflow.db'}"


def artifact_root(uri: str | None = None) -> str | None:
    """Artifact root for a new experiment (None: the tracking server's own).

    A tracking server (``http(s)://``) keeps artifacts where every client can reach them
    (``--serve-artifacts`` / ``--default-artifact-root``); a local file root there would put the
    models on the trainer's disk only, out of reach of the service and ``export-bundle`` on
    any other machine. A local store (SQLite, a database URI) gets the var/ folder.
    """
    explicit = os.environ.get("NEXTBEST_MLFLOW_ARTIFACT_ROOT")
    if explicit:
        return explicit
    scheme = urlparse(uri or tracking_uri()).scheme
    if scheme in ("http", "https", "databricks"):
        return None
    art = (paths().mlflow / "artifacts").resolve()
    art.mkdir(parents=True, exist_ok=True)
    return art.as_uri()


def setup_mlflow() -> str:
    """Point MLflow at the tracking URI and make sure the experiment exists; returns its id."""
    import logging
    import warnings

    import mlflow

    # MLflow's SQLAlchemy store trips a deprecation warning when it is first imported; other
    # libraries put a "once" filter for DeprecationWarning in front of ours, so set it here.
    warnings.filterwarnings("ignore", message=r".*``noload`` loader strategy")

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    paths().mlflow.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri())
    exp = mlflow.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        exp_id: str = mlflow.create_experiment(EXPERIMENT, artifact_location=artifact_root())
    else:
        exp_id = exp.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def client() -> Any:
    from mlflow import MlflowClient

    setup_mlflow()
    return MlflowClient()


def version_by_alias(c: Any, kind: str, alias: str) -> Any | None:
    """The model version carrying ``alias``, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return c.get_model_version_by_alias(REGISTERED_NAMES[kind], alias)
    except MlflowException:
        return None


def run_metrics(
    c: Any, run_id: str, kind: str
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(model metrics, baseline name -> metrics) of ``kind`` logged in run ``run_id``."""
    raw: dict[str, float] = c.get_run(run_id).data.metrics
    model: dict[str, float] = {}
    baselines: dict[str, dict[str, float]] = {}
    prefix = f"{kind}."
    for key, v in raw.items():
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix) :]
        if rest.startswith("baseline_"):
            name, _, metric = rest[len("baseline_") :].partition(".")
            baselines.setdefault(name, {})[metric] = v
        else:
            model[rest] = v
    return model, baselines


def _better(a: float, b: float, higher: bool) -> float:
    """How much ``a`` is better than ``b`` (positive = better)."""
    return a - b if higher else b - a


def check_gates(
    kind: str,
    candidate: dict[str, float],
    baselines: dict[str, dict[str, float]],
    champion: dict[str, float] | None,
) -> list[str]:
    """Reasons the candidate must not become champion (empty list = promote)."""
    reasons: list[str] = []
    if candidate.get("parity_passed", 0.0) < 1.0:
        reasons.append("ONNX parity check did not pass")
    for g in GATES[kind]:
        value = candidate.get(g.metric)
        if value is None or math.isnan(value):
            reasons.append(f"{g.metric} missing")
            continue
        base = [m[g.metric] for m in baselines.values() if g.metric in m]
        if not base:
            continue
        best = max(base) if g.higher_is_better else min(base)
        if _better(value, best, g.higher_is_better) < g.margin:
            reasons.append(
                f"{g.metric} {value:.4f} does not beat the best baseline {best:.4f} by {g.margin}"
            )
    if champion:
        for metric, (higher, tol) in CHAMPION_TOLERANCE[kind].items():
            if metric not in candidate or metric not in champion:
                continue
            if _better(candidate[metric], champion[metric], higher) < -tol:
                reasons.append(
                    f"{metric} {candidate[metric]:.4f} worse than champion "
                    f"{champion[metric]:.4f} beyond tolerance {tol}"
                )
    return reasons


def promote(strict: bool = False) -> tuple[int, dict[str, list[str]]]:
    """Move ``champion`` to ``candidate`` for each model whose gates pass.

    Returns (exit code, model -> refusal reasons). The exit code is non-zero only with
    ``strict`` and at least one refusal.
    """
    c = client()
    decisions: dict[str, list[str]] = {}
    for kind, name in REGISTERED_NAMES.items():
        cand = version_by_alias(c, kind, CANDIDATE)
        if cand is None:
            decisions[kind] = [f"{name} has no '{CANDIDATE}' version (run `train` first)"]
            continue
        champ = version_by_alias(c, kind, CHAMPION)
        if champ is not None and champ.version == cand.version:
            decisions[kind] = []
            continue
        metrics, baselines = run_metrics(c, cand.run_id, kind)
        champ_metrics = run_metrics(c, champ.run_id, kind)[0] if champ is not None else None
        reasons = check_gates(kind, metrics, baselines, champ_metrics)
        decisions[kind] = reasons
        if not reasons:
            c.set_registered_model_alias(name, CHAMPION, cand.version)
    refused = any(decisions.values())
    return (1 if strict and refused else 0), decisions
