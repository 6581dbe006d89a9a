"""Off-policy evaluation: the value of a candidate policy from logs of another one.

Pure numpy functions. With logged rewards ``r_i``, the logging propensity ``mu_i`` of the
logged action ``a_i`` and the candidate policy's probability ``pi_i = pi(a_i | x_i)``,
``w_i = pi_i / mu_i``:

* **IPS**: ``mean(w_i r_i)``; unbiased when ``mu > 0`` wherever ``pi > 0``.
* **SNIPS** (self-normalised): ``sum(w_i r_i) / sum(w_i)``; slightly biased, much lower variance.
* **DM** (direct method): ``mean(sum_a pi(a|x_i) q(x_i, a))`` from a reward model ``q``.
* **DR** (doubly robust): ``DM + mean(w_i (r_i - q(x_i, a_i)))``; unbiased if either the
  propensities or the reward model are right. The reward model is cross-fitted (each row is
  predicted by a model that did not see it).

Intervals: CLT on the per-row terms (``value +- z sd/sqrt(n)``; for SNIPS the linearised
terms ``w_i (r_i - V) / mean(w)``), or a percentile bootstrap (``n_boot > 0``). The effective
sample size ``(sum w)^2 / sum w^2`` says how many logged rows the estimate is really worth;
``ess_events`` = ESS x the log's share of non-zero rewards is about how many rewarded rows
(conversions) it rests on: below ``MIN_EFFECTIVE_EVENTS`` (30) a handful of heavily weighted
rows, which may or may not have converted, decide the estimate, the CLT interval cannot be
trusted and ``reliable`` is False.

Log schema for :func:`evaluate_frame` and ``python -m training ope`` (Parquet or CSV):

| column | meaning |
|---|---|
| ``action`` | the logged action (any string) |
| ``propensity`` | probability with which the logging policy chose that action, in (0, 1] |
| ``reward`` | observed reward (conversion 0/1, revenue, ...) |
| ``x_*`` | context features (numeric; categorical strings are integer-coded) |

Candidate policies (``--policy``): ``constant:<action>``, ``uniform`` (over the actions seen
in the log), ``column:<col>`` (the candidate's action per row is in column ``col``; it may
name actions the log never took, which then earn no weight), ``probs:<prefix>`` (columns
``<prefix><action>`` hold pi(action | x)). The output's ``match`` is the share of rows where
the candidate gives the logged action a positive probability: with a deterministic
candidate, only those rows carry weight.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

__all__ = [
    "Estimate",
    "cross_fit_rewards",
    "direct_method",
    "doubly_robust",
    "dr_terms",
    "effective_sample_size",
    "evaluate",
    "evaluate_frame",
    "ips",
    "paired_difference",
    "policy_matrix",
    "snips",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
RewardModel = Literal["mean", "lgbm"]


@dataclass(frozen=True)
class Estimate:
    method: str
    value: float
    se: float
    low: float
    high: float
    n: int
    ess: float

    def contains(self, truth: float) -> bool:
        return self.low <= truth <= self.high

    def as_row(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "value": self.value,
            "se": self.se,
            "low": self.low,
            "high": self.high,
            "n": self.n,
            "ess": self.ess,
        }


def _z(alpha: float) -> float:
    from scipy import stats

    return float(stats.norm.ppf(1 - alpha / 2))


#: below this many effective rows *with a non-zero reward* the normal (CLT) interval of an
#: importance-weighted estimate is not trustworthy: a handful of heavily weighted rows
#: decide the estimate (see ``evaluate_frame``'s ``ess_events``)
MIN_EFFECTIVE_EVENTS = 30.0


def effective_sample_size(w: F64) -> float:
    s2 = float(np.sum(w**2))
    return float(np.sum(w)) ** 2 / s2 if s2 > 0 else 0.0


def _weights(propensity: F64, target: F64) -> F64:
    if np.any(propensity <= 0) or np.any(propensity > 1):
        raise ValueError("logging propensities must be in (0, 1]")
    out: F64 = np.asarray(target, dtype=np.float64) / np.asarray(propensity, dtype=np.float64)
    return out


def _from_terms(method: str, value: float, terms: F64, w: F64, alpha: float) -> Estimate:
    n = len(terms)
    se = float(np.std(terms, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    z = _z(alpha)
    return Estimate(method, value, se, value - z * se, value + z * se, n, effective_sample_size(w))


def _bootstrap(
    method: str,
    point: float,
    stat: Callable[[I64], float],
    n: int,
    w: F64,
    n_boot: int,
    alpha: float,
    seed: int,
) -> Estimate:
    rng = np.random.default_rng(seed)
    draws = np.array([stat(rng.integers(0, n, n)) for _ in range(n_boot)])
    lo, hi = np.quantile(draws, [alpha / 2, 1 - alpha / 2])
    return Estimate(
        method, point, float(np.std(draws, ddof=1)), float(lo), float(hi), n,
        effective_sample_size(w),
    )  # fmt: skip


def _estimate(
    method: str,
    value: float,
    terms: F64,
    w: F64,
    alpha: float,
    n_boot: int,
    seed: int,
    stat: Callable[[I64], float] | None = None,
) -> Estimate:
    """``value`` with its interval: a percentile bootstrap of ``stat`` (default: the mean of
    ``terms`` over the resampled rows) when ``n_boot`` > 0, else CLT on the per-row ``terms``."""
    if n_boot:
        if stat is None:

            def stat(i: I64) -> float:
                return float(np.mean(terms[i]))

        return _bootstrap(method, value, stat, len(w), w, n_boot, alpha, seed)
    return _from_terms(method, value, terms, w, alpha)


def ips(
    reward: F64,
    propensity: F64,
    target: F64,
    alpha: float = 0.05,
    n_boot: int = 0,
    seed: int = 0,
) -> Estimate:
    """IPS estimate; ``target`` = pi(logged action | x) under the candidate policy."""
    w = _weights(propensity, target)
    terms = w * reward
    return _estimate("IPS", float(np.mean(terms)), terms, w, alpha, n_boot, seed)


def snips(
    reward: F64,
    propensity: F64,
    target: F64,
    alpha: float = 0.05,
    n_boot: int = 0,
    seed: int = 0,
) -> Estimate:
    w = _weights(propensity, target)
    sw = float(np.sum(w))
    if sw == 0:
        nan = float("nan")
        return Estimate("SNIPS", nan, nan, nan, nan, len(w), 0.0)
    value = float(np.sum(w * reward) / sw)

    def stat(i: I64) -> float:
        s = float(np.sum(w[i]))
        return float(np.sum(w[i] * reward[i]) / s) if s > 0 else value

    terms = w * (reward - value) / np.mean(w)  # linearisation (delta method)
    return _estimate("SNIPS", value, terms, w, alpha, n_boot, seed, stat)


def direct_method(q_hat: F64, pi: F64, alpha: float = 0.05) -> Estimate:
    terms = np.sum(pi * q_hat, axis=1)
    return _from_terms("DM", float(np.mean(terms)), terms, np.ones(len(terms)), alpha)


def dr_terms(reward: F64, propensity: F64, action: I64, pi: F64, q_hat: F64) -> F64:
    """Per-row doubly robust terms (their mean is the DR estimate). Two policies evaluated on
    the same rows can be compared by the mean of the difference of their terms (paired)."""
    rows = np.arange(len(action))
    w = _weights(propensity, pi[rows, action])
    out: F64 = np.sum(pi * q_hat, axis=1) + w * (reward - q_hat[rows, action])
    return out


def paired_difference(terms_a: F64, terms_b: F64, alpha: float = 0.05) -> Estimate:
    """Mean of ``terms_a - terms_b`` with a CLT interval (same rows, e.g. two policies' DR
    terms): much tighter than comparing two separate intervals."""
    d = terms_a - terms_b
    return _from_terms("difference", float(np.mean(d)), d, np.ones(len(d)), alpha)


def doubly_robust(
    reward: F64,
    propensity: F64,
    action: I64,
    pi: F64,
    q_hat: F64,
    alpha: float = 0.05,
    n_boot: int = 0,
    seed: int = 0,
) -> Estimate:
    """DR with ``pi`` (n, K) candidate probabilities and ``q_hat`` (n, K) reward predictions."""
    rows = np.arange(len(action))
    w = _weights(propensity, pi[rows, action])
    terms = dr_terms(reward, propensity, action, pi, q_hat)
    return _estimate("DR", float(np.mean(terms)), terms, w, alpha, n_boot, seed)


# ---------------------------------------------------------------------------- reward models


def _fit_predict(
    x_tr: F64, a_tr: I64, r_tr: F64, x_te: F64, n_actions: int, kind: RewardModel, seed: int
) -> F64:
    out = np.zeros((len(x_te), n_actions))
    overall = float(np.mean(r_tr)) if len(r_tr) else 0.0
    binary = bool(np.isin(r_tr, (0.0, 1.0)).all())
    for k in range(n_actions):
        m = a_tr == k
        mean_k = float(np.mean(r_tr[m])) if m.any() else overall
        if kind == "mean" or x_tr.shape[1] == 0 or m.sum() < 200:
            out[:, k] = mean_k
            continue
        import lightgbm as lgb

        params = {
            "objective": "binary" if binary else "regression",
            "learning_rate": 0.05,
            "num_leaves": 15,
            "min_data_in_leaf": 50,
            "lambda_l2": 1.0,
            "verbose": -1,
            "seed": seed,
            "num_threads": 1,
            "deterministic": True,
        }
        if binary and (mean_k in (0.0, 1.0)):
            out[:, k] = mean_k
            continue
        booster = lgb.train(params, lgb.Dataset(x_tr[m], r_tr[m]), num_boost_round=150)
        out[:, k] = np.asarray(booster.predict(x_te), dtype=np.float64)
    return out


def cross_fit_rewards(
    x: F64,
    action: I64,
    reward: F64,
    n_actions: int,
    kind: RewardModel = "mean",
    folds: int = 2,
    seed: int = 0,
) -> F64:
    """Out-of-fold reward predictions q(x_i, a) for every row and action, shape (n, K).

    ``mean``: per-action mean reward; ``lgbm``: one LightGBM per action on the context
    (binary objective for 0/1 rewards), falling back to the mean for rare actions.
    """
    n = len(action)
    fold = np.random.default_rng(seed).integers(0, folds, n)
    q = np.zeros((n, n_actions))
    for f in range(folds):
        te = fold == f
        tr = ~te if folds > 1 else te
        q[te] = _fit_predict(x[tr], action[tr], reward[tr], x[te], n_actions, kind, seed)
    return q


def evaluate(
    reward: F64,
    propensity: F64,
    action: I64,
    pi: F64,
    q_hat: F64 | None = None,
    alpha: float = 0.05,
    n_boot: int = 0,
    seed: int = 0,
) -> list[Estimate]:
    """IPS, SNIPS and (with ``q_hat``) DM and DR for one candidate policy ``pi`` (n, K)."""
    target = pi[np.arange(len(action)), action]
    out = [
        ips(reward, propensity, target, alpha, n_boot, seed),
        snips(reward, propensity, target, alpha, n_boot, seed),
    ]
    if q_hat is not None:
        out.append(direct_method(q_hat, pi, alpha))
        out.append(doubly_robust(reward, propensity, action, pi, q_hat, alpha, n_boot, seed))
    return out


# ------------------------------------------------------------------------- frame interface


def policy_matrix(df: pd.DataFrame, actions: Sequence[str], spec: str) -> F64:
    """pi(a | x) for every row and action (n, K) from a policy spec (see module doc)."""
    n, k = len(df), len(actions)
    index = {a: i for i, a in enumerate(actions)}
    pi = np.zeros((n, k))
    kind, _, arg = spec.partition(":")
    if kind == "uniform":
        pi[:] = 1.0 / k
    elif kind == "constant":
        if arg not in index:
            raise ValueError(f"action {arg!r} never appears in the log: {list(actions)[:10]}")
        pi[:, index[arg]] = 1.0
    elif kind == "column":
        chosen = df[arg].astype(str).to_numpy()
        missing = sorted(set(chosen) - set(index))
        if missing:
            raise ValueError(f"column {arg!r} names actions absent from the log: {missing[:5]}")
        pi[np.arange(n), [index[c] for c in chosen]] = 1.0
    elif kind == "probs":
        for a, i in index.items():
            col = f"{arg}{a}"
            if col in df:
                pi[:, i] = df[col].to_numpy(dtype=np.float64)
        s = pi.sum(axis=1)
        if not np.allclose(s, 1.0, atol=1e-6):
            raise ValueError("policy probabilities do not sum to 1 on every row")
    else:
        raise ValueError(f"unknown policy spec {spec!r}")
    return pi


def context_matrix(df: pd.DataFrame, features: Sequence[str] | None = None) -> F64:
    cols = list(features) if features else [c for c in df.columns if c.startswith("x_")]
    parts = []
    for c in cols:
        s = df[c]
        if s.dtype == object or isinstance(s.dtype, pd.CategoricalDtype) or s.dtype == "string":
            parts.append(pd.Categorical(s.astype(str)).codes.astype(np.float64))
        else:
            parts.append(s.to_numpy(dtype=np.float64))
    if not parts:
        return np.zeros((len(df), 0))
    return np.column_stack(parts)


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
