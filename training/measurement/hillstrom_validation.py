"""Validation of the measurement tools on the Hillstrom e-mail experiment.

The data (:mod:`training.datasets.hillstrom`): customers randomised in thirds to a men's
e-mail, a women's e-mail or no e-mail; outcomes ``visit``, ``conversion``, ``spend``.

(a) :func:`lift_check` runs the lift report (:mod:`training.measurement.lift`) with "No E-Mail"
    as the holdout and checks it reproduces the arm differences computed directly.
(b) :func:`uplift_policy` learns which e-mail (or none) to send per customer (a T-learner:
    one LightGBM per arm on a 70 % seeded split), then evaluates it on the other 30 % with
    the off-policy estimators of :mod:`training.measurement.ope` (logging propensity 1/3 per
    arm), against sending the men's e-mail to everyone, the women's to everyone, nothing,
    and a uniformly random choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from training.datasets.hillstrom import ARMS, OUTCOMES, features
from training.measurement import lift, ope

__all__ = ["LiftCheck", "UpliftResult", "lift_check", "render_uplift", "uplift_policy"]

F64 = npt.NDArray[np.float64]


# ---------------------------------------------------------------------------- (a) lift


@dataclass
class LiftCheck:
    report: lift.LiftReport
    direct: pd.DataFrame  # segment -> visit, conversion, spend means
    max_abs_error: float

    @property
    def ok(self) -> bool:
        return self.max_abs_error < 1e-9


def lift_check(df: pd.DataFrame) -> LiftCheck:
    frame = pd.DataFrame(
        {
            "experiment": "hillstrom",
            "arm": df["segment"].astype(str),
            "holdout": (df["segment"] == "No E-Mail").to_numpy(),
            "unit": np.arange(len(df)),
            "visit": df["visit"].astype(np.float64),
            "converted": df["conversion"].astype(np.float64),
            "revenue": df["spend"].astype(np.float64),
            "channel": df["channel"].astype(str),
            "history_segment": df["history_segment"].astype(str),
            "newbie": df["newbie"].map({0: "existing", 1: "newbie"}).astype(str),
        }
    )
    metrics = (
        lift.Metric("visit rate", "visit"),
        lift.Metric("conversion rate", "converted"),
        lift.Metric("spend / customer", "revenue"),
    )
    shares = {"hillstrom": dict.fromkeys(ARMS, 1 / 3)}
    rep = lift.build_report(
        frame,
        shares,
        metrics,
        breakdowns=("channel", "newbie", "history_segment"),
        title="Hillstrom e-mail experiment: lift vs No E-Mail",
    )
    direct = df.groupby("segment")[list(OUTCOMES)].mean()
    err = 0.0
    col = {"visit rate": "visit", "conversion rate": "conversion", "spend / customer": "spend"}
    for _, r in rep.lift.iterrows():
        d = direct.loc[r["arm"], col[r["metric"]]] - direct.loc["No E-Mail", col[r["metric"]]]
        err = max(err, abs(float(r["abs_lift"]) - float(d)))
    return LiftCheck(rep, direct, err)


# -------------------------------------------------------------------------- (b) uplift


def _t_learner(x: F64, arm: npt.NDArray[np.int64], y: F64, seed: int) -> list[Any]:
    import lightgbm as lgb

    binary = bool(np.isin(y, (0.0, 1.0)).all())
    models = []
    for k in range(len(ARMS)):
        m = arm == k
        params = {
            "objective": "binary" if binary else "regression",
            "learning_rate": 0.03,
            "num_leaves": 15,
            "min_data_in_leaf": 100,
            "lambda_l2": 5.0,
            "feature_fraction": 0.8,
            "bagging_fraction": 0.8,
            "bagging_freq": 1,
            "verbose": -1,
            "seed": seed,
            "num_threads": 1,
            "deterministic": True,
        }
        models.append(lgb.train(params, lgb.Dataset(x[m], y[m]), num_boost_round=200))
    return models


def _predict(models: list[Any], x: F64) -> F64:
    return np.column_stack([np.asarray(m.predict(x), dtype=np.float64) for m in models])


@dataclass
class UpliftResult:
    table: pd.DataFrame  # policy x outcome x estimator
    truth: pd.DataFrame  # constant policies: the arm means on the test split (outcome cols)
    #: uplift model minus each other policy: paired DR difference per outcome, with CI
    differences: pd.DataFrame
    chosen_share: dict[str, float]  # share of test customers per action under the model
    n_train: int
    n_test: int
    target: str
    cost: float


def uplift_policy(
    df: pd.DataFrame,
    target: str = "visit",
    cost: float = 0.0,
    train_share: float = 0.7,
    seed: int = 42,
    n_boot: int = 0,
) -> UpliftResult:
    """T-learner policy: send the arm with the highest predicted ``target`` minus ``cost``
    per e-mail; evaluated off-policy on the held-out split for every outcome."""
    arm = pd.Categorical(df["segment"], categories=list(ARMS)).codes.astype(np.int64)
    if (arm < 0).any():
        raise ValueError(f"unexpected segments: {sorted(set(df['segment']) - set(ARMS))}")
    x = features(df)
    rng = np.random.default_rng(seed)
    train = rng.random(len(df)) < train_share
    test = ~train
    y_target = df[target].to_numpy(np.float64)
    models = _t_learner(x[train], arm[train], y_target[train], seed)
    score = _predict(models, x[test]) - np.array([0.0, cost, cost])
    choice = score.argmax(axis=1)
    n_te = int(test.sum())
    k = len(ARMS)
    policies: dict[str, F64] = {}
    pi = np.zeros((n_te, k))
    pi[np.arange(n_te), choice] = 1.0
    policies[f"uplift model (T-learner on {target})"] = pi
    for j, name in enumerate(ARMS):
        p = np.zeros((n_te, k))
        p[:, j] = 1.0
        label = {"No E-Mail": "send nothing", "Mens E-Mail": "men's e-mail to everyone"}.get(
            name, "women's e-mail to everyone"
        )
        policies[label] = p
    policies["random"] = np.full((n_te, k), 1.0 / k)
    mu = np.full(n_te, 1.0 / 3.0)
    a_te = arm[test]
    rows = []
    diffs = []
    model_name = next(iter(policies))
    for outcome in OUTCOMES:
        y = df[outcome].to_numpy(np.float64)
        # reward model for DR: T-learner on this outcome from the training split only
        q_models = models if outcome == target else _t_learner(x[train], arm[train], y[train], seed)
        q = _predict(q_models, x[test])
        terms = {}
        for pname, p in policies.items():
            for est in ope.evaluate(y[test], mu, a_te, p, q, n_boot=n_boot, seed=seed):
                if est.method == "DM":
                    continue
                rows.append({"policy": pname, "outcome": outcome, **est.as_row()})
            terms[pname] = ope.dr_terms(y[test], mu, a_te, p, q)
        for pname, t in terms.items():
            if pname != model_name:
                e = ope.paired_difference(terms[model_name], t)
                diffs.append({"versus": pname, "outcome": outcome, "difference": e.value,
                              "low": e.low, "high": e.high})  # fmt: skip
    test_df = df[test]
    truth = test_df.groupby("segment")[list(OUTCOMES)].mean().reindex(list(ARMS))
    share = {ARMS[j]: float(np.mean(choice == j)) for j in range(k)}
    return UpliftResult(
        pd.DataFrame(rows), truth, pd.DataFrame(diffs), share, int(train.sum()), n_te, target,
        cost,
    )  # fmt: skip


def render_uplift(res: UpliftResult) -> str:
    t = res.table
    lines = [
        f"Uplift policy: T-learner (LightGBM per arm) on {res.target!r}, cost per e-mail "
        f"{res.cost:g}; trained on {res.n_train:,}, evaluated off-policy on {res.n_test:,} "
        "(logging propensity 1/3 per arm)",
        "model's choices on the test split: "
        + ", ".join(f"{a} {s:.1%}" for a, s in res.chosen_share.items()),
        "",
    ]
    for outcome in OUTCOMES:
        scale, unit = (100.0, "%") if outcome != "spend" else (1.0, "$/customer")
        sub = t[t["outcome"] == outcome]
        lines.append(f"{outcome} ({unit}), estimate [95% CI] (ESS)")
        wide: dict[str, dict[str, str]] = {}
        for _, r in sub.iterrows():
            wide.setdefault(str(r["policy"]), {})[str(r["method"])] = (
                f"{r['value'] * scale:.3f} [{r['low'] * scale:.3f}, {r['high'] * scale:.3f}]"
                f" ({r['ess']:,.0f})"
            )
        lines.append(pd.DataFrame(wide).T.to_string())
        dsub = res.differences[res.differences["outcome"] == outcome]
        lines.append(
            "  uplift model minus, paired DR difference [95% CI]: "
            + "; ".join(
                f"{r['versus']} {r['difference'] * scale:+.3f} "
                f"[{r['low'] * scale:+.3f}, {r['high'] * scale:+.3f}]"
                for _, r in dsub.iterrows()
            )
        )
        lines.append(
            "  direct arm means on the test split: "
            + ", ".join(
                f"{a} {v * scale:.3f}"
                for a, v in zip(ARMS, res.truth[outcome].to_numpy(np.float64), strict=True)
            )
        )
        lines.append("")
    return "\n".join(lines)
