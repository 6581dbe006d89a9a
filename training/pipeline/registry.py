"""MLflow tracking and model registry: log a training run, register versions, gate promotion.

Registered models: ``nextbest-propensity``, ``nextbest-send-time``, ``nextbest-channel``.
``train`` gives each new version the alias ``candidate``; ``promote`` moves ``champion`` to
the candidate only when every gate passes (:func:`check_gates`); ``rollback`` moves it back to
the previous champion. Versions are always resolved through aliases, never by number.

Gates, per model, all on data any company has (no ground truth needed):
  * the ONNX parity check passed;
  * the primary held-out metric beats the best simple baseline by ``margin`` (``GATES``);
  * where held-out sends carry the logging policy's propensities (propensity model): the
    candidate's offer policy is not significantly worse than the logged one off-policy
    (``ope_vs_logged``: the candidate's SNIPS interval does not lie entirely below the
    logged policy's);
  * ground-truth regret beats the baselines (``TRUTH_GATES``), only when the candidate
    reports it (the synthetic world's truth was there at training);
  * no key metric is worse than the current champion's by more than its tolerance
    (``CHAMPION_TOLERANCE``), both measured on the same rows: ``train`` scores the champion
    on the candidate's own held-out rows and logs those figures in the candidate's run
    (``<model>.champion_same_rows.<metric>``, see :mod:`training.pipeline.train`); the gate
    uses them when they are of the current champion, else (older runs, a champion that
    could not be scored, or moved since) the metrics the champion logged in its own training
    run, on its own test rows. The gate's detail says which.

What the registry records (read it in the MLflow UI or with ``MlflowClient``):

| where | key | value |
|---|---|---|
| model version | description | what the model predicts, its data window, headline metric vs the best baseline |
| model version | ``features``, ``features.count``, ``features.sha256`` | the input columns in order, their number, sha256 of the JSON list |
| model version | ``feature_service``, ``train_run`` | the Feast feature service; the parent training run |
| model's run | ``<model>.champion_same_rows.<metric>``, tags ``champion_same_rows.version`` / ``champion_same_rows.skipped`` | set by ``train``: the champion's metrics on this run's test rows and the version scored, or why it was not |
| model version | ``gates`` and ``gate.<name>`` | set by ``promote``: ``passed``/``failed`` overall and per gate, with the values compared |
| model version | ``champion.promoted_at``, ``champion.previous`` | set when ``promote`` makes it champion: when, and the version it replaced |
| model version | ``champion.rolled_back_at`` | set when ``rollback`` moved ``champion`` away from it; ``promote`` then refuses it |
| registered model | ``champion.history`` | JSON list of the versions that were champion, oldest first, the current one last |
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

from contracts.models import CANDIDATE, CHAMPION, EXPERIMENT, REGISTERED_NAMES
from training.settings import paths

__all__ = [
    "CANDIDATE",
    "CHAMPION",
    "CHAMPION_TOLERANCE",
    "EXPERIMENT",
    "GATES",
    "HISTORY_TAG",
    "REGISTERED_NAMES",
    "SAME_ROWS",
    "TRUTH_GATES",
    "Gate",
    "GateOutcome",
    "artifact_root",
    "champion_same_rows",
    "check_gates",
    "client",
    "describe_version",
    "feature_tags",
    "gate_outcomes",
    "promote",
    "rollback",
    "run_metrics",
    "setup_mlflow",
    "tracking_uri",
]


@dataclass(frozen=True)
class Gate:
    metric: str
    higher_is_better: bool
    margin: float  # required advantage over the best baseline


#: gates on metrics any data gives (held-out later period vs the simple baselines)
GATES: dict[str, list[Gate]] = {
    "propensity": [Gate("auc", True, 0.01)],
    # hit rate must beat the best baseline (no margin)
    "send_time": [Gate("top3_hit_rate", True, 0.0)],
    "channel": [Gate("logloss", False, 0.001)],
}
#: gates on ground-truth metrics: checked only when the candidate reports them (the synthetic
#: world's truth was there at training); never required
TRUTH_GATES: dict[str, list[Gate]] = {
    "propensity": [Gate("regret_conversion", False, 0.0)],
    "send_time": [Gate("regret_open", False, 0.0)],
    "channel": [Gate("regret_open", False, 0.0)],
}
#: metric -> (higher is better, absolute tolerance vs the current champion)
CHAMPION_TOLERANCE: dict[str, dict[str, tuple[bool, float]]] = {
    "propensity": {"auc": (True, 0.005), "logloss": (False, 0.005), "ece": (False, 0.01)},
    "send_time": {"top1_hit_rate": (True, 0.01), "top3_hit_rate": (True, 0.01)},
    "channel": {"logloss": (False, 0.005), "top1_accuracy_opted_in": (True, 0.01)},
}
#: prefix of the champion's metrics on a candidate's own test rows, logged by ``train`` in the
#: candidate's run: metrics ``<model>.champion_same_rows.<metric>``, tags
#: ``champion_same_rows.version`` (the champion version scored) or ``champion_same_rows.skipped``
SAME_ROWS = "champion_same_rows"


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
        if rest.startswith(f"{SAME_ROWS}."):
            continue  # another model's figures (champion_same_rows)
        if rest.startswith("baseline_"):
            name, _, metric = rest[len("baseline_") :].partition(".")
            baselines.setdefault(name, {})[metric] = v
        else:
            model[rest] = v
    return model, baselines


def champion_same_rows(
    c: Any, run_id: str, kind: str, champion: str
) -> tuple[dict[str, float], str]:
    """(metrics, note): the champion's metrics on the candidate's own test rows as ``train``
    logged them in run ``run_id``, when they are of version ``champion`` (the current one);
    else no metrics and a note saying why (for the gate's detail)."""
    run = c.get_run(run_id).data
    scored = run.tags.get(f"{SAME_ROWS}.version")
    skipped = run.tags.get(f"{SAME_ROWS}.skipped")
    prefix = f"{kind}.{SAME_ROWS}."
    metrics = {k[len(prefix) :]: v for k, v in run.metrics.items() if k.startswith(prefix)}
    if scored is None:
        why = f"not scored at training: {skipped}" if skipped else "the run predates them"
        return {}, f"no same-row figures ({why})"
    if scored != str(champion):
        return {}, f"the same-row figures are of v{scored}, the champion is now v{champion}"
    if not metrics:
        return {}, f"no same-row figures of v{scored} logged"
    return metrics, ""


def _better(a: float, b: float, higher: bool) -> float:
    """How much ``a`` is better than ``b`` (positive = better)."""
    return a - b if higher else b - a


def best_baseline(
    metric: str, higher_is_better: bool, baselines: dict[str, dict[str, float]]
) -> tuple[str, float] | None:
    """(name, value) of the best baseline on ``metric``, or None when none reports it."""
    base = [(name, m[metric]) for name, m in baselines.items() if metric in m]
    if not base:
        return None
    pick = max if higher_is_better else min
    return pick(base, key=lambda nv: nv[1])


@dataclass(frozen=True)
class GateOutcome:
    """One promotion gate: its name, whether it passed, the values it compared, and (when
    it failed) the reason ``promote`` prints."""

    name: str
    passed: bool
    detail: str
    reason: str | None = None

    @property
    def tag(self) -> str:
        return f"{'passed' if self.passed else 'failed'}: {self.detail}"


def gate_outcomes(
    kind: str,
    candidate: dict[str, float],
    baselines: dict[str, dict[str, float]],
    champion: dict[str, float] | None,
    same_rows: dict[str, float] | None = None,
    no_same_rows: str = "no same-row figures",
) -> list[GateOutcome]:
    """Every gate of ``kind`` on the candidate's metrics (see the module doc).

    ``champion``: the metrics the champion logged in its own training run (None: there is no
    champion); ``same_rows``: the champion's metrics on the candidate's own test rows
    (:func:`champion_same_rows`), which the ``<metric>_vs_champion`` gates prefer;
    ``no_same_rows``: why there are none, for the detail of a gate that falls back.
    """
    out: list[GateOutcome] = []
    parity = candidate.get("parity_passed", 0.0) >= 1.0
    diff = candidate.get("parity_max_abs_diff", float("nan"))
    out.append(
        GateOutcome(
            "onnx_parity",
            parity,
            f"parity_passed {candidate.get('parity_passed', 0.0):g}, max |diff| {diff:.1e}",
            None if parity else "ONNX parity check did not pass",
        )
    )
    truth = [g for g in TRUTH_GATES.get(kind, []) if g.metric in candidate]
    for g in [*GATES[kind], *truth]:
        name = f"{g.metric}_vs_best_baseline"
        value = candidate.get(g.metric)
        if value is None or math.isnan(value):
            out.append(GateOutcome(name, False, f"{g.metric} missing", f"{g.metric} missing"))
            continue
        best = best_baseline(g.metric, g.higher_is_better, baselines)
        if best is None:
            out.append(GateOutcome(name, True, f"{g.metric} {value:.4f}, no baseline reports it"))
            continue
        detail = (
            f"{g.metric} {value:.4f} vs best baseline {best[1]:.4f} ({best[0]}), "
            f"required margin {g.margin}"
        )
        ok = not _better(value, best[1], g.higher_is_better) < g.margin  # NaN passes, as before
        reason = (
            None
            if ok
            else f"{g.metric} {value:.4f} does not beat the best baseline {best[1]:.4f} "
            f"by {g.margin}"
        )
        out.append(GateOutcome(name, ok, detail, reason))
    if "ope_snips_high" in candidate and "logged_policy" in baselines:
        out.append(ope_gate(candidate, baselines["logged_policy"]))
    if champion is not None:
        same = same_rows or {}
        for metric, (higher, tol) in CHAMPION_TOLERANCE[kind].items():
            if metric not in candidate:
                continue
            if metric in same:
                theirs, where = same[metric], "on the same test rows"
            elif metric in champion:
                why = no_same_rows if not same else f"no same-row figure of {metric}"
                theirs, where = champion[metric], f"in its own training run ({why})"
            else:
                continue
            ok = not _better(candidate[metric], theirs, higher) < -tol
            detail = (
                f"{metric} {candidate[metric]:.4f} vs champion {theirs:.4f} {where}, "
                f"tolerance {tol}"
            )
            reason = (
                None
                if ok
                else f"{metric} {candidate[metric]:.4f} worse than champion {theirs:.4f} "
                f"{where} beyond tolerance {tol}"
            )
            out.append(GateOutcome(f"{metric}_vs_champion", ok, detail, reason))
    return out


def ope_gate(candidate: dict[str, float], logged: dict[str, float]) -> GateOutcome:
    """The candidate's offer policy must not be significantly worse than the logged policy
    off-policy: its SNIPS interval (95%) must not lie entirely below the logged policy's."""
    value = candidate.get("ope_snips_value", float("nan"))
    high = candidate.get("ope_snips_high", float("nan"))
    low = candidate.get("ope_snips_low", float("nan"))
    base = logged.get("ope_snips_value", float("nan"))
    base_low = logged.get("ope_snips_low", float("nan"))
    reliable = candidate.get("ope_reliable", 0.0) >= 1.0
    detail = (
        f"SNIPS value {value:.4f} (95% CI {low:.4f} to {high:.4f}) vs the logged policy "
        f"{base:.4f} (from {base_low:.4f}), {int(candidate.get('ope_rows', 0)):,} logged sends, "
        f"effective sample size {candidate.get('ope_ess', 0.0):.0f}"
        + ("" if reliable else ", few rewarded rows")
    )
    ok = not high < base_low  # NaN (nothing to compare) passes
    reason = (
        None
        if ok
        else f"off-policy value {value:.4f} is significantly below the logged policy's "
        f"{base:.4f} (95% CI upper end {high:.4f} < {base_low:.4f})"
    )
    return GateOutcome("ope_vs_logged", ok, detail, reason)


def check_gates(
    kind: str,
    candidate: dict[str, float],
    baselines: dict[str, dict[str, float]],
    champion: dict[str, float] | None,
    same_rows: dict[str, float] | None = None,
) -> list[str]:
    """Reasons the candidate must not become champion (empty list = promote)."""
    outcomes = gate_outcomes(kind, candidate, baselines, champion, same_rows)
    return [o.reason for o in outcomes if o.reason]


# ------------------------------------------------------------- what a version carries


#: what each model predicts (the first line of a version's description)
PURPOSE = {
    "propensity": "P(conversion | opened message) for an offer on a channel",
    "send_time": "P(open) of a message by the customer's local send hour",
    "channel": "P(open) of a message per channel",
}


def feature_tags(features: list[str]) -> dict[str, str]:
    """Model version tags naming the input columns, in order."""
    blob = json.dumps(features).encode()
    return {
        "features": ",".join(features),
        "features.count": str(len(features)),
        "features.sha256": hashlib.sha256(blob).hexdigest(),
    }


def describe_version(
    kind: str,
    metrics: dict[str, float],
    baselines: dict[str, dict[str, float]],
    window: dict[str, str],
    feature_service: str,
    n_features: int,
) -> str:
    """A model version's description: what, which data, the headline metric vs the best
    baseline (the first gate's metric)."""
    g = GATES[kind][0]
    lines = [
        f"{kind}: {PURPOSE[kind]}. LightGBM served as ONNX; {n_features} features from the "
        f"feature service {feature_service}.",
        f"Data: trained on messages sent {window['train_start']} to {window['train_end']}, "
        f"tested on {window['test_start']} to {window['test_end']}"
        + (
            f" (decision-log rows tested from {window['log_test_start']})"
            if "log_test_start" in window
            else ""
        )
        + f"; {int(metrics.get('test_rows', 0)):,} test rows.",
    ]
    value = metrics.get(g.metric)
    best = best_baseline(g.metric, g.higher_is_better, baselines)
    if value is not None and best is not None:
        better = "higher" if g.higher_is_better else "lower"
        lines.append(
            f"Headline: {g.metric} {value:.4f} vs best baseline {best[0]} {best[1]:.4f} "
            f"({better} is better)."
        )
    return "\n".join(lines)


# ----------------------------------------------------------------- promotion and rollback

HISTORY_TAG = "champion.history"
HISTORY_MAX = 100  # versions kept in the history (a registered-model tag holds 5,000 chars)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def champion_history(c: Any, name: str) -> list[str]:
    """Versions that were champion of ``name``, oldest first (the registered model's tag)."""
    raw = c.get_registered_model(name).tags.get(HISTORY_TAG)
    return [str(v) for v in json.loads(raw)] if raw else []


def _set_history(c: Any, name: str, history: list[str]) -> None:
    c.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history[-HISTORY_MAX:]))


def _record_gates(c: Any, name: str, version: str, outcomes: list[GateOutcome], champ: Any) -> None:
    old = c.get_model_version(name, version).tags
    for key in old:
        if key.startswith("gate."):
            c.delete_model_version_tag(name, version, key)
    tags = {f"gate.{o.name}": o.tag for o in outcomes}
    tags["gates"] = "passed" if all(o.passed for o in outcomes) else "failed"
    tags["gates.checked_at"] = _now()
    tags["gates.champion_version"] = str(champ.version) if champ is not None else "none"
    for key, value in tags.items():
        c.set_model_version_tag(name, version, key, value)


def _move_champion(c: Any, name: str, new: str, old: Any) -> None:
    """Point ``champion`` at ``new`` and record the move (history, version tags)."""
    history = champion_history(c, name)
    if old is not None and (not history or history[-1] != str(old.version)):
        history.append(str(old.version))  # a champion set outside `promote`
    c.set_registered_model_alias(name, CHAMPION, new)
    _set_history(c, name, [*history, new])
    c.set_model_version_tag(name, new, "champion.promoted_at", _now())
    c.set_model_version_tag(
        name, new, "champion.previous", str(old.version) if old is not None else "none"
    )


def promote(strict: bool = False) -> tuple[int, dict[str, list[str]]]:
    """Move ``champion`` to ``candidate`` for each model whose gates pass.

    Every evaluated candidate gets the gate outcomes as tags (``gate.<name>``, ``gates``).
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
        rolled_back = cand.tags.get("champion.rolled_back_at")
        if rolled_back:
            decisions[kind] = [
                f"v{cand.version} was rolled back from champion at {rolled_back} "
                "(train a new candidate, or move the alias by hand)"
            ]
            continue
        metrics, baselines = run_metrics(c, cand.run_id, kind)
        champ_metrics, same_rows, note = None, None, ""
        if champ is not None:
            champ_metrics = run_metrics(c, champ.run_id, kind)[0]
            same_rows, note = champion_same_rows(c, cand.run_id, kind, str(champ.version))
        outcomes = gate_outcomes(kind, metrics, baselines, champ_metrics, same_rows, note)
        _record_gates(c, name, str(cand.version), outcomes, champ)
        reasons = [o.reason for o in outcomes if o.reason]
        decisions[kind] = reasons
        if not reasons:
            _move_champion(c, name, str(cand.version), champ)
    refused = any(decisions.values())
    return (1 if strict and refused else 0), decisions


@dataclass(frozen=True)
class Rollback:
    """What ``rollback`` did for one model: moved ``champion`` from one version to another,
    or refused (``reason``)."""

    kind: str
    from_version: str | None = None
    to_version: str | None = None
    reason: str | None = None


def rollback(kinds: list[str] | None = None) -> dict[str, Rollback]:
    """Move ``champion`` of each model in ``kinds`` (default: all three) back to the version
    that was champion before it, as recorded by ``promote`` (``champion.history``).

    Refuses a model without a champion, without an earlier champion in the history, or
    whose earlier champion no longer exists. The version moved away from is tagged
    ``champion.rolled_back_at`` (``promote`` will not make it champion again).
    """
    from mlflow.exceptions import MlflowException

    c = client()
    out: dict[str, Rollback] = {}
    for kind in kinds or list(REGISTERED_NAMES):
        name = REGISTERED_NAMES[kind]
        current = version_by_alias(c, kind, CHAMPION)
        if current is None:
            out[kind] = Rollback(kind, reason=f"{name} has no '{CHAMPION}' version")
            continue
        now = str(current.version)
        history = champion_history(c, name)
        if history and history[-1] == now:
            history = history[:-1]
        # else: champion was moved by hand since the last promotion; go back to the last
        # version `promote` or `rollback` put there
        if not history:
            out[kind] = Rollback(
                kind, now, reason=f"no earlier champion of {name} recorded (champion is v{now})"
            )
            continue
        target = history[-1]
        try:
            c.get_model_version(name, target)
        except MlflowException:
            out[kind] = Rollback(
                kind, now, reason=f"the earlier champion v{target} of {name} no longer exists"
            )
            continue
        c.set_registered_model_alias(name, CHAMPION, target)
        _set_history(c, name, history)
        c.set_model_version_tag(name, now, "champion.rolled_back_at", _now())
        out[kind] = Rollback(kind, now, target)
    return out
