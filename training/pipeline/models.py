"""LightGBM binary classifiers for the three models, with fixed seeds and early stopping.

Early stopping uses the last 10% (by send time) of the training window as validation, so the
held-out test period is never looked at while fitting.
"""

from __future__ import annotations

import warnings
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt

__all__ = ["PARAMS", "fit"]

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
) -> lgb.LGBMClassifier:
    """Fit on time-ordered rows ``x`` (earliest first); refit not needed (best iteration).

    ``weight``: optional sample weights (e.g. inverse logging propensities of log rows).
    """
    p = {**PARAMS, **(params or {})}
    n_valid = max(int(len(x) * VALID_SHARE), 1)
    cut = len(x) - n_valid
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
