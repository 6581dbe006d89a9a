"""LightGBM binary classifiers for the three models, with fixed seeds and early stopping.

Early stopping uses the last 10% (by send time) of the training window as validation, so the
held-out test period is never looked at while fitting. With ``groups`` (history rows and rows
from the service's decision log), the last 10 % of each group: the log is the newest data, and a
plain tail would spend all of a small log on early stopping and never fit on it.
"""

from __future__ import annotations

import warnings
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt

__all__ = ["PARAMS", "fit", "validation_rows"]

PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_child_samples": 100,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.8,
    "reg_lambda": 1.0,
    "n_estimators": 400,
    "random_state": 42,
    "deterministic": True,
    "force_row_wise": True,
    "n_jobs": 2,
    "verbose": -1,
}
VALID_SHARE = 0.1
EARLY_STOPPING = 30


def fit(
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.int64],
    feature_names: list[str],
    params: dict[str, Any] | None = None,
    weight: npt.NDArray[np.float64] | None = None,
    groups: npt.NDArray[Any] | None = None,
) -> lgb.LGBMClassifier:
    """Fit on time-ordered rows ``x`` (earliest first); refit not needed (best iteration).

    ``weight``: optional sample weights (e.g. inverse logging propensities of log rows).
    ``groups``: optional label per row; each group gives its own newest rows to validation.
    """
    p = {**PARAMS, **(params or {})}
    valid = validation_rows(len(x), groups)
    order = np.concatenate([np.flatnonzero(~valid), np.flatnonzero(valid)])
    x, y = x[order], y[order]
    weight = None if weight is None else weight[order]
    cut = int((~valid).sum())
    model = lgb.LGBMClassifier(**p)
    names = [f.replace(" ", "_") for f in feature_names]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*eval_set.*")
        model.fit(
            x[:cut],
            y[:cut],
            sample_weight=None if weight is None else weight[:cut],
            eval_set=[(x[cut:], y[cut:])],
            eval_sample_weight=None if weight is None else [weight[cut:]],
            eval_metric="binary_logloss",
            feature_name=names,
            callbacks=[lgb.early_stopping(EARLY_STOPPING, verbose=False)],
        )
    return model


def validation_rows(n: int, groups: npt.NDArray[Any] | None = None) -> npt.NDArray[np.bool_]:
    """The early-stopping rows: the newest ``VALID_SHARE`` of time-ordered rows, per group."""
    valid = np.zeros(n, dtype=bool)
    labels = np.zeros(n, dtype=np.int8) if groups is None else np.asarray(groups)
    for g in np.unique(labels):
        idx = np.flatnonzero(labels == g)
        valid[idx[len(idx) - max(int(len(idx) * VALID_SHARE), 1) :]] = True
    return valid
