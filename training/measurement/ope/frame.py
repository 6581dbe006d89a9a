"""The frame interface: a log in the documented schema -> one row per policy and estimator,
and the service's decision log -> that schema."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from training.measurement.ope.estimators import (
    F64,
    MIN_EFFECTIVE_EVENTS,
    dr_terms,
    effective_sample_size,
    evaluate,
    paired_difference,
)
from training.measurement.ope.policies import policy_matrix
from training.measurement.ope.reward import RewardModel, context_matrix, cross_fit_rewards


def evaluate_frame(
    df: pd.DataFrame,
    policies: Sequence[str],
    reward_model: RewardModel = "mean",
    features: Sequence[str] | None = None,
    alpha: float = 0.05,
    n_boot: int = 0,
    seed: int = 0,
    compare_to: str | None = None,
) -> pd.DataFrame:
    """Evaluate candidate policies on a log in the documented schema; one row per estimator.

    ``compare_to``: one of ``policies``; every other policy also gets a row ``DR - <it>``,
    the paired difference of their per-row DR terms (same rows, so much tighter than two
    separate intervals)."""
    missing = {"action", "propensity", "reward"} - set(df.columns)
    if missing:
        raise ValueError(f"log lacks columns {sorted(missing)}")
    logged = set(df["action"].astype(str).unique())
    for spec in policies:  # a candidate may choose actions the log never took
        kind, _, col = spec.partition(":")
        if kind == "column" and col in df:
            logged |= set(df[col].astype(str).unique())
    actions = sorted(logged)
    index = {a: i for i, a in enumerate(actions)}
    a = np.array([index[v] for v in df["action"].astype(str)], dtype=np.int64)
    r = df["reward"].to_numpy(dtype=np.float64)
    mu = df["propensity"].to_numpy(dtype=np.float64)
    x = context_matrix(df, features)
    q = cross_fit_rewards(x, a, r, len(actions), reward_model, seed=seed)
    if compare_to is not None and compare_to not in policies:
        raise ValueError(f"compare_to {compare_to!r} is not one of the evaluated policies")
    rows = []
    terms: dict[str, F64] = {}
    for spec in policies:
        pi = policy_matrix(df, actions, spec)
        # share of rows where the candidate would take the logged action with probability > 0
        target = pi[np.arange(len(a)), a]
        match = float(np.mean(target > 0))
        # expected number of effective rows with a reward (e.g. conversions): ESS x the
        # log's share of non-zero rewards
        events = effective_sample_size(target / mu) * float(np.mean(r != 0))
        extra = {"match": match, "ess_events": events, "reliable": events >= MIN_EFFECTIVE_EVENTS}
        for est in evaluate(r, mu, a, pi, q, alpha, n_boot, seed):
            rows.append({"policy": spec, **est.as_row(), **extra})
        terms[spec] = dr_terms(r, mu, a, pi, q)
    if compare_to is not None:
        for spec in policies:
            if spec != compare_to:
                e = paired_difference(terms[spec], terms[compare_to], alpha)
                row = {**e.as_row(), "method": f"DR - {compare_to}", "ess": float("nan")}
                rel = bool(rows_reliable(rows, spec) and rows_reliable(rows, compare_to))
                rows.append({"policy": spec, **row, "match": float("nan"),
                             "ess_events": float("nan"), "reliable": rel})  # fmt: skip
    rows.append(
        {
            "policy": "logging (on-policy mean)",
            "method": "mean",
            "value": float(np.mean(r)),
            "se": float(np.std(r, ddof=1) / math.sqrt(len(r))) if len(r) > 1 else float("nan"),
            "low": float("nan"),
            "high": float("nan"),
            "n": len(r),
            "ess": float(len(r)),
            "match": 1.0,
            "ess_events": float(np.sum(r != 0)),
            "reliable": True,
        }
    )
    return pd.DataFrame(rows)


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
