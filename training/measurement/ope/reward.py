"""Reward models q(x, a) for DM and the DR family, cross-fitted with K folds.

Each row's prediction comes from a model fitted on the other K - 1 folds, so the DR
correction ``w (r - q)`` is not fooled by a model that memorised the row.

* ``mean``: the mean reward of each action in the training folds (the overall mean for an
  action the folds never saw). No context.
* ``lgbm``: one LightGBM model over *context and action features together*: the context
  columns ``x`` and the action's features (by default the parts of an ``offer|channel|hour``
  action name: offer and channel integer-coded, hour numeric, plus any ``a_*`` columns of a
  catalogue; an action name without parts or features enters as a categorical id). Being one model, it learns from every
  row, predicts actions the log rarely or never took through their features, and does not
  need a minimum number of rows per action. Binary objective for 0/1 rewards, regression
  otherwise. It falls back to ``mean`` only when it cannot be fitted: fewer than
  ``MIN_LGBM_ROWS`` training rows in a fold, or a 0/1 reward with fewer than
  ``MIN_LGBM_EVENTS`` rows of either class in a fold. The fallback is never silent:
  :attr:`RewardFit.fallback` says why, and the CLI prints it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

__all__ = [
    "MIN_LGBM_EVENTS",
    "MIN_LGBM_ROWS",
    "RewardFit",
    "RewardModel",
    "action_features",
    "context_matrix",
    "cross_fit",
    "cross_fit_rewards",
    "fit_reward_model",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
RewardModel = Literal["mean", "lgbm"]
Predictor = Callable[[F64, I64], F64]  # (context rows, action ids) -> q

#: fewer training rows than this in a fold: LightGBM falls back to per-action means
MIN_LGBM_ROWS = 200
#: a 0/1 reward with fewer rows than this of either class in a fold: fall back likewise
MIN_LGBM_EVENTS = 10


def _lgbm_params(binary: bool, n: int, seed: int) -> dict[str, object]:
    return {
        "objective": "binary" if binary else "regression",
        "learning_rate": 0.1,
        "num_leaves": 15,
        "min_data_in_leaf": max(20, min(200, n // 200)),
        "lambda_l2": 1.0,
        "cat_smooth": 10.0,
        "verbose": -1,
        "seed": seed,
        "num_threads": 1,
        "deterministic": True,
    }


def _why_not_lgbm(r: F64) -> str | None:
    """Why LightGBM cannot be fitted on these rewards (None: it can)."""
    if len(r) < MIN_LGBM_ROWS:
        return f"only {len(r)} training rows in a fold (< {MIN_LGBM_ROWS})"
    if bool(np.isin(r, (0.0, 1.0)).all()):
        pos = int(r.sum())
        if min(pos, len(r) - pos) < MIN_LGBM_EVENTS:
            return (
                f"a fold has {pos} rewarded and {len(r) - pos} unrewarded rows "
                f"(< {MIN_LGBM_EVENTS} of one class)"
            )
    return None


def _mean_model(a: I64, r: F64, n_actions: int) -> Predictor:
    overall = float(np.mean(r)) if len(r) else 0.0
    sums = np.bincount(a, weights=r, minlength=n_actions)
    counts = np.bincount(a, minlength=n_actions)
    means = np.where(counts > 0, sums / np.maximum(counts, 1), overall)

    def predict(x: F64, actions: I64) -> F64:
        out: F64 = means[actions]
        return out

    return predict


def _design(x: F64, actions: I64, afeat: F64) -> F64:
    """Context, then the action: its features when it has some, else its id (categorical)."""
    if afeat.shape[1]:
        return np.column_stack([x, afeat[actions]])
    return np.column_stack([x, actions.astype(np.float64)])


def _lgbm_model(x: F64, a: I64, r: F64, afeat: F64, seed: int) -> Predictor:
    import lightgbm as lgb

    binary = bool(np.isin(r, (0.0, 1.0)).all())
    cat = [] if afeat.shape[1] else [x.shape[1]]  # the action id, when it has no features
    ds = lgb.Dataset(_design(x, a, afeat), r, categorical_feature=cat, free_raw_data=True)
    booster = lgb.train(_lgbm_params(binary, len(r), seed), ds, num_boost_round=100)

    def predict(xq: F64, actions: I64) -> F64:
        if len(actions) == 0:
            return np.zeros(0)
        out: F64 = np.asarray(booster.predict(_design(xq, actions, afeat)), dtype=np.float64)
        return out

    return predict


def fit_reward_model(
    x: F64, a: I64, r: F64, n_actions: int, kind: RewardModel, afeat: F64, seed: int = 0
) -> tuple[Predictor, str | None]:
    """One model on these rows: (predictor, why it fell back to means or None)."""
    if kind == "mean":
        return _mean_model(a, r, n_actions), None
    if kind != "lgbm":
        raise ValueError(f"reward model must be mean or lgbm, not {kind!r}")
    why = _why_not_lgbm(r)
    if why is not None:
        return _mean_model(a, r, n_actions), why
    return _lgbm_model(x, a, r, afeat, seed), None


@dataclass
class RewardFit:
    """A cross-fitted reward model: out-of-fold predictions for any (row, action)."""

    kind: str  # what was asked for
    used: str  # what was fitted: ``lgbm`` or ``mean``
    fallback: str | None  # why ``used`` differs from ``kind`` (None if it does not)
    folds: int
    fold: I64  # each row's fold
    x: F64
    models: list[Predictor]

    def predict(self, rows: I64, actions: I64) -> F64:
        """q(x_rows, actions), each from the model that did not see that row."""
        out = np.zeros(len(rows))
        f = self.fold[rows]
        for k, m in enumerate(self.models):
            sel = f == k
            if sel.any():
                out[sel] = m(self.x[rows[sel]], actions[sel])
        return out

    def dense(self, n_actions: int) -> F64:
        n = len(self.fold)
        rows = np.repeat(np.arange(n), n_actions)
        acts = np.tile(np.arange(n_actions), n)
        return self.predict(rows, acts).reshape(n, n_actions)

    def describe(self) -> str:
        s = f"{self.used} ({self.folds}-fold cross-fitted)"
        if self.fallback:
            s += f"; asked for {self.kind}, FELL BACK to mean: {self.fallback}"
        return s


def cross_fit(
    x: F64,
    action: I64,
    reward: F64,
    n_actions: int,
    kind: RewardModel = "mean",
    folds: int = 5,
    seed: int = 0,
    afeat: F64 | None = None,
) -> RewardFit:
    """Fit ``folds`` models (each on the other folds; ``folds == 1``: one in-sample model).

    When LightGBM cannot be fitted on some fold, every fold uses the mean model (one kind of
    model for the whole log) and :attr:`RewardFit.fallback` says why."""
    n = len(action)
    if folds < 1:
        raise ValueError("folds must be >= 1")
    folds = min(folds, max(n, 1))
    fold = np.empty(n, dtype=np.int64)
    fold[np.random.default_rng(seed).permutation(n)] = np.arange(n) % folds
    af = afeat if afeat is not None else np.zeros((n_actions, 0))
    train = [fold != k if folds > 1 else np.ones(n, dtype=bool) for k in range(folds)]
    why = None
    if kind == "lgbm":
        why = next((w for t in train if (w := _why_not_lgbm(reward[t])) is not None), None)
    used: RewardModel = "mean" if (kind == "mean" or why is not None) else "lgbm"
    models = [
        fit_reward_model(x[t], action[t], reward[t], n_actions, used, af, seed + k)[0]
        for k, t in enumerate(train)
    ]
    return RewardFit(kind, used, why, folds, fold, x, models)


def cross_fit_rewards(
    x: F64,
    action: I64,
    reward: F64,
    n_actions: int,
    kind: RewardModel = "mean",
    folds: int = 2,
    seed: int = 0,
) -> F64:
    """Out-of-fold reward predictions q(x_i, a) for every row and action, shape (n, K)."""
    return cross_fit(x, action, reward, n_actions, kind, folds, seed).dense(n_actions)


def _codes(s: pd.Series) -> F64:
    return pd.Categorical(s.astype(str)).codes.astype(np.float64)


def context_matrix(df: pd.DataFrame, features: Sequence[str] | None = None) -> F64:
    cols = list(features) if features else [c for c in df.columns if c.startswith("x_")]
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"context columns not in the log: {missing}")
    parts = []
    for c in cols:
        s = df[c]
        if s.dtype == object or isinstance(s.dtype, pd.CategoricalDtype) or s.dtype == "string":
            parts.append(_codes(s))
        else:
            parts.append(s.to_numpy(dtype=np.float64))
    if not parts:
        return np.zeros((len(df), 0))
    return np.column_stack(parts)


def action_features(actions: Sequence[str], catalogue: pd.DataFrame | None = None) -> F64:
    """(K, p) features of each action: the ``|``-separated parts of its name (numeric parts,
    e.g. an hour, as numbers; others integer-coded) and any ``a_*`` columns of
    ``catalogue`` (indexed by action)."""
    parts = pd.Series(list(actions), dtype=object).str.split("|", expand=True)
    cols: list[F64] = []
    if parts.shape[1] > 1:
        for j in parts.columns:
            s = parts[j].fillna("")
            num = pd.to_numeric(s, errors="coerce")
            cols.append(num.to_numpy(np.float64) if num.notna().all() else _codes(s))
    if catalogue is not None:
        extra = [c for c in catalogue.columns if str(c).startswith("a_")]
        if extra:
            cat = catalogue.reindex(list(actions))
            for c in extra:
                s = cat[c]
                if s.dtype == object or s.dtype == "string":
                    cols.append(_codes(s))
                else:
                    cols.append(s.to_numpy(dtype=np.float64))
    if not cols:
        return np.zeros((len(actions), 0))
    return np.column_stack(cols)
