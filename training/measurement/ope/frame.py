"""The frame interface: a log in the documented schema -> one row per policy and estimator,
and the service's decision log -> that schema.

Log schema (Parquet or CSV):

| column | meaning |
|---|---|
| ``action`` | the logged action (any string; ``offer|channel|hour`` parts become features) |
| ``propensity`` | probability with which the logging policy chose that action, in (0, 1] |
| ``reward`` | observed reward (click or conversion 0/1, revenue, ...) |
| ``x_*`` | context features (numeric; categorical strings are integer-coded) |
| slot column (optional) | the position of the row's action when a decision showed several |
| ``<prefix><action>`` (optional) | the logging policy's full distribution, for the support check |
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from training.measurement.ope.estimators import (
    ALL_METHODS,
    F64,
    I64,
    MIN_EFFECTIVE_EVENTS,
    LoggedData,
    effective_sample_size,
    estimate,
    paired_difference,
    reward_range_of,
)
from training.measurement.ope.policies import (
    PolicyDist,
    UnsupportedPolicyError,
    catalogue_actions,
    policy_dist,
    support_problems,
)
from training.measurement.ope.reward import (
    RewardFit,
    RewardModel,
    action_features,
    context_matrix,
    cross_fit,
    fit_reward_model,
)

Unsupported = Literal["error", "warn"]

#: at most this many refitted reward models for DM's bootstrap (each refit costs a fit)
DM_REFITS = 30


@dataclass
class LogArrays:
    """A log in the OPE schema as arrays, with its catalogue and its cross-fitted reward model."""

    actions: list[str]  # the catalogue
    a: I64
    r: F64
    mu: F64
    x: F64
    afeat: F64
    fit: RewardFit
    q_logged: F64 = field(init=False)

    def __post_init__(self) -> None:
        self.q_logged = self.fit.predict(np.arange(len(self.a), dtype=np.int64), self.a)

    def dm_terms(self, pol: PolicyDist) -> F64:
        r, a, p = pol.pairs()
        out = np.bincount(r, weights=p * self.fit.predict(r, a), minlength=len(self.a))
        return out.astype(np.float64)

    def data(self, pol: PolicyDist) -> LoggedData:
        return LoggedData(self.r, self.mu, pol.target(self.a), self.q_logged, self.dm_terms(pol))

    def dm_refit_boot(self, pols: Sequence[PolicyDist], n_boot: int, seed: int) -> F64:
        """DM of each policy on ``n_boot`` row resamples, the reward model refitted on each
        (so the interval carries the model's estimation error): shape (n_boot, len(pols))."""
        n, k = len(self.a), len(self.actions)
        rng = np.random.default_rng(seed + 1)
        out = np.zeros((n_boot, len(pols)))
        kind: RewardModel = "lgbm" if self.fit.used == "lgbm" else "mean"
        for b in range(n_boot):
            idx = rng.integers(0, n, n)
            model, _ = fit_reward_model(
                self.x[idx], self.a[idx], self.r[idx], k, kind, self.afeat, seed + b
            )
            for j, pol in enumerate(pols):
                rr, aa, pp = pol.take(idx).pairs()
                out[b, j] = float(np.sum(pp * model(self.x[idx][rr], aa))) / n
        return out


def log_arrays(
    df: pd.DataFrame,
    actions: Sequence[str],
    reward_model: RewardModel = "mean",
    features: Sequence[str] | None = None,
    folds: int = 5,
    seed: int = 0,
    catalogue: pd.DataFrame | None = None,
) -> LogArrays:
    missing = {"action", "propensity", "reward"} - set(df.columns)
    if missing:
        raise ValueError(f"log lacks columns {sorted(missing)}")
    index = {a: i for i, a in enumerate(actions)}
    a = np.array([index[v] for v in df["action"].astype(str)], dtype=np.int64)
    r = df["reward"].to_numpy(dtype=np.float64)
    mu = df["propensity"].to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~((mu > 0) & (mu <= 1)))
    if len(bad):
        raise ValueError(
            f"propensity must be in (0, 1]: {len(bad)} rows are not (first rows "
            f"{bad[:5].tolist()}, values {mu[bad[:5]].tolist()})"
        )
    x = context_matrix(df, features)
    afeat = action_features(actions, catalogue)
    fit = cross_fit(x, a, r, len(actions), reward_model, folds, seed, afeat)
    return LogArrays(list(actions), a, r, mu, x, afeat, fit)


def _logging_matrix(df: pd.DataFrame, actions: Sequence[str], prefix: str) -> F64:
    cols = [f"{prefix}{a}" for a in actions]
    have = [c in df for c in cols]
    if not any(have):
        raise ValueError(f"no logging-probability column {prefix}<action> in the log")
    return np.column_stack(
        [
            df[c].to_numpy(np.float64) if h else np.zeros(len(df))
            for c, h in zip(cols, have, strict=True)
        ]
    )


def _evaluate_log(
    df: pd.DataFrame,
    policies: Sequence[str],
    actions: Sequence[str],
    reward_model: RewardModel,
    features: Sequence[str] | None,
    alpha: float,
    n_boot: int,
    seed: int,
    compare_to: str | None,
    folds: int,
    catalogue: pd.DataFrame | None,
    methods: Sequence[str],
    reward_range: tuple[float, float] | None,
    logging_probs: str | None,
    unsupported: Unsupported,
    dm_refits: int,
    notes: list[str],
) -> tuple[list[dict[str, Any]], RewardFit]:
    la = log_arrays(df, actions, reward_model, features, folds, seed, catalogue)
    rng_range = reward_range if reward_range is not None else reward_range_of(la.r)
    mu_all = _logging_matrix(df, actions, logging_probs) if logging_probs else None
    rows: list[dict[str, Any]] = []
    dr: dict[str, F64] = {}
    pols = [policy_dist(df, actions, spec) for spec in policies]
    for spec, pol in zip(policies, pols, strict=True):
        problem = support_problems(pol, la.a, actions, mu_all)
        if problem is not None:
            msg = f"policy {spec!r}: {problem}"
            if unsupported == "error":
                raise UnsupportedPolicyError(
                    msg + ". Importance weighting cannot credit these actions; DM and the DR "
                    "family fall back on the reward model there. Evaluate anyway with "
                    "unsupported='warn' (--unsupported warn)."
                )
            notes.append("WARNING " + msg + " (their value rests on the reward model alone)")
    want = n_boot > 1 and "DM" in methods and dm_refits > 1
    boots = la.dm_refit_boot(pols, min(n_boot, dm_refits), seed) if want else None
    for j, (spec, pol) in enumerate(zip(policies, pols, strict=True)):
        d = la.data(pol)
        boot = boots[:, j] if boots is not None and "DM" in methods else None
        target = d.target
        match = float(np.mean(target > 0))
        events = effective_sample_size(d.w) * float(np.mean(la.r != 0))
        extra = {"match": match, "ess_events": events, "reliable": events >= MIN_EFFECTIVE_EVENTS}
        for est in estimate(d, methods, alpha, n_boot, seed, rng_range, None, boot):
            e_extra = dict(extra)
            if est.method == "DM":  # no weights: its trust rests on the reward model
                e_extra["ess_events"] = float(np.sum(la.r != 0))
                e_extra["reliable"] = True
            rows.append({"policy": spec, **est.as_row(), **e_extra,
                         "reward_model": la.fit.used if est.method in _MODEL else ""})  # fmt: skip
        assert d.q_logged is not None and d.dm is not None
        dr[spec] = d.dm + d.w * (d.reward - d.q_logged)
    if compare_to is not None:
        lo, hi = rng_range
        span = (lo - hi, hi - lo)
        for spec in policies:
            if spec != compare_to:
                e = paired_difference(dr[spec], dr[compare_to], alpha)
                low, high = (float(np.clip(v, *span)) for v in (e.low, e.high))
                row = {**e.as_row(), "low": low, "high": high, "clt_low": low, "clt_high": high,
                       "method": f"DR - {compare_to}", "ess": float("nan")}  # fmt: skip
                rel = bool(rows_reliable(rows, spec) and rows_reliable(rows, compare_to))
                rows.append({"policy": spec, **row, "match": float("nan"),
                             "ess_events": float("nan"), "reliable": rel,
                             "reward_model": la.fit.used})  # fmt: skip
    r = la.r
    se = float(np.std(r, ddof=1) / math.sqrt(len(r))) if len(r) > 1 else float("nan")
    nan = float("nan")
    rows.append(
        {"policy": "logging (on-policy mean)", "method": "mean", "value": float(np.mean(r)),
         "se": se, "low": nan, "high": nan, "clt_low": nan, "clt_high": nan, "boot_low": nan,
         "boot_high": nan, "param": "", "n": len(r), "ess": float(len(r)), "match": 1.0,
         "ess_events": float(np.sum(r != 0)), "reliable": True, "reward_model": ""}
    )  # fmt: skip
    return rows, la.fit


_MODEL = frozenset({"DM", "DR", "SNDR", "DR-clip", "Switch-DR", "DR-OS"})


def evaluate_frame(
    df: pd.DataFrame,
    policies: Sequence[str],
    reward_model: RewardModel = "mean",
    features: Sequence[str] | None = None,
    alpha: float = 0.05,
    n_boot: int = 0,
    seed: int = 0,
    compare_to: str | None = None,
    *,
    folds: int = 5,
    catalogue: Sequence[str] | pd.DataFrame | None = None,
    methods: Sequence[str] = ALL_METHODS,
    reward_range: tuple[float, float] | None = None,
    slot: str | None = None,
    logging_probs: str | None = None,
    unsupported: Unsupported = "error",
    dm_refits: int = DM_REFITS,
) -> pd.DataFrame:
    """Evaluate candidate policies on a log in the documented schema; one row per estimator.

    ``folds``: K of the reward model's cross-fitting. ``catalogue``: every action a policy
    may take (a list, or a frame with an ``action`` column and optional ``a_*`` features);
    default: the logged actions and those the candidates name. ``reward_range``: the
    intervals are clipped to it (default: [0, 1] for 0/1 rewards, else [min(0, min r),
    max r]). ``slot``: a column with the position of each row's action when a decision
    showed several; each slot is evaluated on its own rows and ``slot == "all"`` rows add
    them up (value = sum; interval = sum of the slot bounds, conservative whatever the
    correlation between slots). ``logging_probs``: prefix of columns holding the logging
    policy's probability of every action, for a row-by-row support check.
    ``unsupported``: what to do when a candidate gives probability to actions the logging
    policy did not take: ``error`` (raise :class:`UnsupportedPolicyError` naming them and
    their rows) or ``warn`` (evaluate, with a note in ``attrs["notes"]``).
    ``compare_to``: one of ``policies``; every other policy also gets a row ``DR - <it>``,
    the paired difference of their per-row DR terms.

    The result's ``attrs``: ``reward_model`` (what was fitted, and any fallback with its
    reason), ``reward_model_fallback`` (the reason or None), ``catalogue`` (its size),
    ``notes`` (warnings). The ``reward_model`` column repeats what the model-based rows used.
    """
    if compare_to is not None and compare_to not in policies:
        raise ValueError(f"compare_to {compare_to!r} is not one of the evaluated policies")
    missing = {"action", "propensity", "reward"} - set(df.columns)
    if missing:
        raise ValueError(f"log lacks columns {sorted(missing)}")
    cat_frame = None
    cat_list: list[str] | None = None
    if isinstance(catalogue, pd.DataFrame):
        if "action" not in catalogue:
            raise ValueError("the catalogue needs an 'action' column")
        cat_list = catalogue["action"].astype(str).tolist()
        cat_frame = catalogue.assign(action=cat_list).set_index("action")
    elif catalogue is not None:
        cat_list = [str(a) for a in catalogue]
    actions = catalogue_actions(df, policies, cat_list)
    notes: list[str] = []
    args = (actions, reward_model, features, alpha, n_boot, seed, compare_to, folds, cat_frame,
            methods, reward_range, logging_probs, unsupported, dm_refits, notes)  # fmt: skip
    fits: list[RewardFit] = []
    if slot is None:
        rows, fit = _evaluate_log(df, policies, *args)
        fits.append(fit)
    else:
        if slot not in df:
            raise ValueError(f"slot column {slot!r} is not in the log")
        rows = []
        for s, sub in df.groupby(slot, sort=True):
            part, fit = _evaluate_log(sub.reset_index(drop=True), policies, *args)
            fits.append(fit)
            rows += [{**row, "slot": str(s)} for row in part]
        rows += _slot_totals(rows)
    out = pd.DataFrame(rows)
    fb = next((f.fallback for f in fits if f.fallback), None)
    out.attrs["reward_model"] = (
        fits[0].describe() if not fb else next(f.describe() for f in fits if f.fallback)
    )
    out.attrs["reward_model_fallback"] = fb
    out.attrs["catalogue"] = len(actions)
    out.attrs["notes"] = notes
    return out


def _slot_totals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (policy, method): the sum over slots (intervals: sum of the bounds)."""
    t = pd.DataFrame(rows)
    out = []
    for (pol, meth), g in t.groupby(["policy", "method"], sort=False):
        row: dict[str, Any] = {"policy": pol, "method": meth, "slot": "all"}
        for c in ("value", "se", "low", "high", "clt_low", "clt_high", "boot_low", "boot_high"):
            row[c] = float(g[c].sum(min_count=1)) if g[c].notna().all() else float("nan")
        row.update(param="", n=int(g["n"].sum()), ess=float(g["ess"].sum()),
                   match=float(np.average(g["match"], weights=g["n"])),
                   ess_events=float(g["ess_events"].sum()),
                   reliable=bool(g["reliable"].all()), reward_model=str(g["reward_model"].iloc[0]))  # fmt: skip
        out.append(row)
    return out


def rows_reliable(rows: list[dict[str, Any]], spec: str) -> bool:
    return all(bool(r["reliable"]) for r in rows if r["policy"] == spec)


def withdrawn(suppressed: pd.Series) -> npt.NDArray[np.bool_]:
    """Decisions whose chosen action was withdrawn after the decision.

    The engine reserves the contact after the pure decision; when a concurrent decision took
    the last slot of a frequency cap (or the caps could not be checked) it drops the action
    and logs a ``frequency_cap`` suppression *naming the offer*. Such a record's
    ``choice_probability`` belongs to the withdrawn action, not to the "no action" that was
    logged, so these rows cannot be used for off-policy evaluation.
    """

    def one(v: Any) -> bool:
        return any(r[0] == "frequency_cap" and r[1] is not None for r in json.loads(v or "[]"))

    return np.array([one(v) for v in suppressed], dtype=bool)


#: context columns of the service's log, prefixed ``x_`` in the OPE schema
LOG_CONTEXT = ("known", "cold_start", "placement")


def bandit_log_from_decisions(
    outcomes: pd.DataFrame, reward: str = "revenue", policies: Sequence[str] = ("explore",)
) -> pd.DataFrame:
    """The service's decision log (with outcomes) -> the OPE log schema.

    Rows: decisions made under the arm policies ``policies`` (default: the ``explore`` arms,
    whose ``choice_probability`` is the exact probability of the logged action given the
    context and the arm), not opted out, and not withdrawn after the decision (see
    :func:`withdrawn`). The arm is drawn independently of the context (a hash of the unit),
    so conditioning on it keeps the estimators unbiased. Rows from deterministic arms
    (``model``, ``popular``: probability 1 for their action, 0 for every other) only support
    candidates that agree with them and are left out by default.

    ``action`` = ``offer|channel`` of the action taken (``none`` for no action);
    ``propensity`` = ``choice_probability``; ``reward`` = ``revenue`` or ``converted`` from
    the feedback; ``x_*`` = context. The decision's ``decision_id``, ``unit``, ``ts``,
    ``placement``, ``suppressed``, ``arm`` and logged send hour are kept for replaying
    candidates (:mod:`training.measurement.replay`).
    """
    df = outcomes[~outcomes["opted_out"] & outcomes["unit"].notna()]
    df = df[df["policy"].astype(str).isin(list(policies)) & ~df["holdout"].astype(bool)]
    df = df[~withdrawn(df["suppressed"])]
    action = (df["action_offer"].astype(str) + "|" + df["action_channel"].astype(str)).where(
        df["action_offer"].notna(), "none"
    )
    ts = pd.to_datetime(df["ts"], utc=True)
    return pd.DataFrame(
        {
            "action": action.to_numpy(),
            "propensity": df["choice_probability"].fillna(1.0).to_numpy(dtype=np.float64),
            "reward": df[reward].astype(np.float64).to_numpy(),
            "x_known": df["known"].astype(np.float64).to_numpy(),
            "x_cold_start": df["cold_start"].astype(np.float64).to_numpy(),
            "x_placement": df["placement"].astype(str).to_numpy(),
            "x_hour_utc": ts.dt.hour.to_numpy(dtype=np.float64),
            "decision_id": df["decision_id"].astype(str).to_numpy(),
            "unit": df["unit"].astype(str).to_numpy(),
            "ts": ts.to_numpy(),
            "known": df["known"].astype(bool).to_numpy(),
            "placement": df["placement"].astype(str).to_numpy(),
            "suppressed": df["suppressed"].astype(str).to_numpy(),
            "arm": df["arm"].astype(str).to_numpy(),
            "logged_local_hour": df["action_local_hour"].astype(np.int64).to_numpy(),
        }
    ).reset_index(drop=True)
