"""The extended estimators, reward-model fallback, policy inputs and the selection harness.

Pure-logic tests on small synthetic logs whose true values are known (no service needed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from contracts.records import DecisionRecord
from training.measurement import decision_log, ope
from training.measurement.ope import harness

NAMES = np.array(["a", "b", "c"])


def _log(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Contexts x, logging mu(a | x) varying with x, 0/1 rewards with p(x, a) known."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    logits = np.column_stack([0.8 * x, np.zeros(n), -0.8 * x])
    mu_all = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    a = (rng.random(n)[:, None] > np.cumsum(mu_all, axis=1)).sum(axis=1)
    p = 1 / (1 + np.exp(-np.column_stack([-1 + x, -0.5 * np.ones(n), -1.5 - x])))
    r = (rng.random(n) < p[np.arange(n), a]).astype(float)
    df = pd.DataFrame(
        {
            "action": NAMES[a],
            "propensity": mu_all[np.arange(n), a],
            "reward": r,
            "x_0": x,
            "best": NAMES[p.argmax(axis=1)],
            **{f"mu_{k}": mu_all[:, i] for i, k in enumerate(NAMES)},
        }
    )
    return df, p


def test_new_estimators_are_consistent_and_dr_family_agrees() -> None:
    df, p = _log(8000, seed=5)
    truth = float(np.mean(p.max(axis=1)))
    t = ope.evaluate_frame(df, ["column:best"], "lgbm", folds=3).set_index("method")
    assert t.attrs["reward_model_fallback"] is None
    for m in ope.ALL_METHODS:
        row = t.loc[m]
        assert abs(row["value"] - truth) < 4 * row["se"] + 0.01, (m, row["value"], truth)
        assert row["ess"] > 0
    # with the right propensities and a good model, every DR variant is close to DR
    for m in ("SNDR", "DR-clip", "Switch-DR", "DR-OS"):
        assert abs(t.loc[m, "value"] - t.loc["DR", "value"]) < 0.02


def test_dr_variants_are_unbiased_over_repeated_logs() -> None:
    """Mean of many small-log estimates ~ the truth (mean reward model: only the weights
    correct it, so a biased weighting would show)."""
    est: dict[str, list[float]] = {m: [] for m in ("IPS", "DR", "SNDR", "SNIPS")}
    truths = []
    for s in range(40):
        df, p = _log(1500, seed=100 + s)
        truths.append(float(np.mean(p[:, 2])))
        t = ope.evaluate_frame(df, ["constant:c"], "mean", folds=2, methods=tuple(est))
        for m in est:
            est[m].append(float(t.loc[t["method"] == m, "value"].iloc[0]))
    truth = float(np.mean(truths))
    for m, v in est.items():
        se = np.std(v, ddof=1) / np.sqrt(len(v))
        assert abs(np.mean(v) - truth) < 4 * se + 0.003, (m, np.mean(v), truth)


def test_clipping_and_shrinkage_behave() -> None:
    rng = np.random.default_rng(0)
    n = 4000
    mu = np.where(rng.random(n) < 0.5, 0.9, 0.01)
    target = np.ones(n)
    r = (rng.random(n) < 0.3).astype(float)
    q = np.full(n, 0.3)
    d = ope.LoggedData(r, mu, target, q, q)
    res = {e.method: e for e in ope.estimate(d, alpha=0.05)}
    # clipping lowers the weights it applies: higher ESS than plain IPS / DR
    assert res["IPS-clip"].ess >= res["IPS"].ess
    assert res["DR-OS"].ess >= res["DR"].ess
    assert res["DR-clip"].param.startswith("tau=") and res["DR-OS"].param.startswith("lam=")
    # a perfect reward model: every DR variant equals DM whatever the weights
    for m in ("DR", "SNDR", "DR-clip", "Switch-DR", "DR-OS"):
        d0 = ope.LoggedData(np.full(n, 0.3), mu, target, q, q)
        (e,) = ope.estimate(d0, (m,))
        assert e.value == pytest.approx(0.3)


def test_slope_picks_the_last_candidate_consistent_with_the_less_biased() -> None:
    z = 1.96
    # the second agrees with the first; the third is far off (biased): stop at the second
    assert ope.slope_select([0.50, 0.52, 0.90], [0.10, 0.05, 0.01], z) == 1
    # all consistent: the least variable one
    assert ope.slope_select([0.50, 0.51, 0.52], [0.10, 0.05, 0.01], z) == 2
    assert ope.slope_select([0.5], [float("nan")], z) == 0


def test_intervals_are_clipped_to_the_reward_range_and_bootstrap_is_beside_clt() -> None:
    rng = np.random.default_rng(1)
    n = 300
    mu = np.full(n, 0.02)
    target = (rng.random(n) < 0.02).astype(float)  # a few rows with weight 50
    r = np.zeros(n)
    r[:2] = 1.0
    d = ope.LoggedData(r, mu, target, np.full(n, 0.01), np.full(n, 0.01))
    for e in ope.estimate(d, alpha=0.05, n_boot=200, reward_range=(0.0, 1.0)):
        for v in (e.low, e.high, e.clt_low, e.clt_high, e.boot_low, e.boot_high):
            assert 0.0 <= v <= 1.0, e
        assert not np.isnan(e.boot_low) and not np.isnan(e.clt_low)
    # the frame interface infers [0, 1] for 0/1 rewards; DM gets a (refitted) bootstrap too
    df, _ = _log(3000, seed=2)
    t = ope.evaluate_frame(df, ["constant:c"], "mean", n_boot=100, dm_refits=10)
    dm = t[t["method"] == "DM"].iloc[0]
    assert dm["boot_high"] - dm["boot_low"] > dm["clt_high"] - dm["clt_low"]
    assert (t["low"].dropna() >= 0).all() and (t["high"].dropna() <= 1).all()


def test_lgbm_fallback_is_reported_not_silent() -> None:
    df, _ = _log(150, seed=3)  # too few rows per fold
    t = ope.evaluate_frame(df, ["constant:a"], "lgbm", folds=5)
    assert "training rows" in t.attrs["reward_model_fallback"]
    assert "FELL BACK" in t.attrs["reward_model"]
    assert set(t.loc[t["method"] == "DR", "reward_model"]) == {"mean"}
    fit = ope.cross_fit(np.zeros((500, 1)), np.zeros(500, dtype=np.int64), np.zeros(500), 1,
                        "lgbm", folds=1)  # fmt: skip
    assert fit.used == "mean" and "rewarded" in (fit.fallback or "")


def test_policy_inputs_over_the_catalogue() -> None:
    df, _ = _log(4000, seed=4)
    # probs over the whole catalogue: a resample without any "c" row still sums to 1
    sub = df[df["action"] != "c"].reset_index(drop=True).assign(pi_a=0.2, pi_b=0.3, pi_c=0.5)
    with pytest.raises(ope.UnsupportedPolicyError, match=r"\['c'\]"):
        ope.evaluate_frame(sub, ["probs:pi_"])
    t = ope.evaluate_frame(sub, ["probs:pi_"], unsupported="warn")
    assert t.attrs["catalogue"] == 3
    bad = df.assign(pi_a=0.2, pi_b=0.3, pi_c=0.4)
    with pytest.raises(ValueError, match="sum to 1 over the catalogue on every row; 4000 rows"):
        ope.evaluate_frame(bad, ["probs:pi_"])
    # uniform is uniform over the catalogue, not over the logged actions
    cat = ["a", "b", "c", "d"]
    pol = ope.policy_dist(df, cat, "uniform")
    assert np.allclose(pol.probs, 0.25)
    with pytest.raises(ope.UnsupportedPolicyError, match=r"\['d'\]"):
        ope.evaluate_frame(df, ["uniform"], catalogue=cat)
    with pytest.raises(ValueError, match="not in the catalogue"):
        ope.evaluate_frame(df, ["constant:a"], catalogue=["a", "b"])
    # row-by-row support from the logging distribution: no row may lack it here
    ok = ope.evaluate_frame(df, ["column:best"], logging_probs="mu_")
    assert len(ok)
    zero = df.assign(mu_c=np.where(np.arange(len(df)) < 7, 0.0, df["mu_c"]))
    with pytest.raises(ope.UnsupportedPolicyError, match="rows give positive probability"):
        ope.evaluate_frame(zero, ["constant:c"], logging_probs="mu_")


def test_slot_column_adds_up_slots() -> None:
    a, _ = _log(3000, seed=6)
    b, _ = _log(3000, seed=7)
    df = pd.concat([a.assign(slot=1), b.assign(slot=2)], ignore_index=True)
    t = ope.evaluate_frame(df, ["constant:a"], "mean", slot="slot", methods=("IPS", "DR"))
    dr = t[(t["policy"] == "constant:a") & (t["method"] == "DR")].set_index("slot")
    assert dr.loc["all", "value"] == pytest.approx(dr.loc["1", "value"] + dr.loc["2", "value"])
    assert dr.loc["all", "low"] <= dr.loc["all", "value"] <= dr.loc["all", "high"]


def test_harness_smoke_simulator_and_log_split() -> None:
    cfg = harness.SimConfig(customers=400, reps=2, n_boot=20, dm_refits=2, folds=2,
                            world_customers=3000, reward="opened")  # fmt: skip
    res = harness.simulate_harness(cfg, None, methods=("IPS", "SNIPS", "DM", "DR", "Switch-DR"))
    assert set(res.summary["policy"]) == {
        "model", "rule_email_10h", "send_time_19h", "channel_push",
    }  # fmt: skip
    assert (res.summary["truth"] > 0).all()
    assert res.recommended.split(" ")[0] in {"IPS", "SNIPS", "DM", "DR", "Switch-DR"}
    assert "RECOMMENDED" in res.render()
    df, _ = _log(4000, seed=8)
    res2 = harness.split_harness(df, ["constant:a", "column:best"], reps=2, reward_model="mean",
                                 folds=2, n_boot=20, methods=("IPS", "DR"))  # fmt: skip
    assert set(res2.summary["policy"]) == {"constant:a", "column:best"}
    assert res2.summary["cover_clt"].between(0, 1).all()


def test_export_fills_model_versions_and_allocation() -> None:
    rec = DecisionRecord(decision_id="d1", ts=1.79e9, unit="C1", known=True, arm="explore",
                         policy="explore", allocation="caller",
                         model_versions={"propensity": "3", "send_time": "2", "channel": "1"})  # fmt: skip
    row = decision_log.flatten_decisions([rec]).iloc[0]
    assert row["model_version_propensity"] == "3" and row["model_version_send_time"] == "2"
    assert row["model_version_channel"] == "1" and row["allocation"] == "caller"


def test_cli_reports_fallback_support_and_harness(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.cli import main

    df, _ = _log(150, seed=9)
    path = tmp_path / "log.csv"
    df.to_csv(path, index=False)
    assert main(["ope", "--log", str(path), "--policy", "column:best", "--bootstrap", "50"]) == 0
    out = capsys.readouterr().out
    assert "FELL BACK to mean" in out and "boot_low" in out and "Switch-DR" in out
    assert main(["ope", "--log", str(path), "--policy", "constant:zzz"]) == 2
    assert "missing support" in capsys.readouterr().out
    big, _ = _log(3000, seed=10)
    big.to_parquet(tmp_path / "big.parquet")
    rc = main(["ope-harness", "--log", str(tmp_path / "big.parquet"), "--policy", "constant:a",
               "--reps", "2", "--bootstrap", "20", "--reward-model", "mean", "--folds", "2",
               "--methods", "IPS,DR", "--out", str(tmp_path / "h.csv")])  # fmt: skip
    assert rc == 0 and "RECOMMENDED" in capsys.readouterr().out
    assert len(pd.read_csv(tmp_path / "h.csv")) == 2
