"""Reward models q(x, a) for DM and DR, cross-fitted (each row predicted by a model that did
not see it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
RewardModel = Literal["mean", "lgbm"]


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
