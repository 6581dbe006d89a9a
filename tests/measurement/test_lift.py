"""Lift statistics, the SRM check and the report renderers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from service.domain.config import load_policy
from training.measurement import lift


def test_welch_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.1, 2, 500), rng.normal(1.0, 1, 800)
    d, lo, hi, p = lift.welch(a, b)
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert d == pytest.approx(a.mean() - b.mean())
    assert p == pytest.approx(ref.pvalue)
    ci = ref.confidence_interval()
    assert (lo, hi) == pytest.approx((ci.low, ci.high))


def test_relative_interval_covers_truth() -> None:
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(200):
        t = (rng.random(4000) < 0.06).astype(float)
        c = (rng.random(4000) < 0.05).astype(float)
        _, lo, hi = lift.relative_delta(t, c)
        hits += lo <= 0.2 <= hi
    assert 180 <= hits <= 200  # ~95 % coverage


def test_srm_check() -> None:
    shares = {"holdout": 0.05, "model": 0.855, "popular": 0.095}
    ok = lift.srm_check("nba", {"holdout": 500, "model": 8560, "popular": 940}, shares)
    assert not ok.mismatch and ok.p_value > 0.05
    bad = lift.srm_check("nba", {"holdout": 700, "model": 8400, "popular": 900}, shares)
    assert bad.mismatch and bad.p_value < 1e-6
    unknown = lift.srm_check("nba", {"holdout": 500, "model": 8560, "popular": 940, "x": 3}, shares)
    assert unknown.mismatch and unknown.unknown_arms == ["x"]


def test_configured_shares_from_policy() -> None:
    policy = load_policy()
    shares = lift.configured_shares(policy)
    h = policy.experiments.global_holdout
    arms = {a.name: (1 - h) * a.share for a in policy.experiments.definitions["nba"].arms}
    assert shares["nba"] == pytest.approx({"holdout": h, **arms})
    assert shares["nba"] == pytest.approx(
        {"holdout": 0.05, "model": 0.76, "explore": 0.095, "popular": 0.095}
    )
    assert sum(shares["send_time"].values()) == pytest.approx(1.0)


def _frame(n: int = 6000, holdout_share: float = 0.05, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    unit = rng.integers(0, n // 2, n)  # about two decisions per unit
    u = (unit * 2654435761 % 10_000) / 10_000
    arm = np.where(u < holdout_share, "holdout", np.where(u < 0.9, "model", "popular"))
    p = np.where(arm == "holdout", 0.02, np.where(arm == "model", 0.05, 0.035))
    conv = (rng.random(n) < p).astype(float)
    return pd.DataFrame(
        {
            "experiment": "nba",
            "arm": arm,
            "holdout": arm == "holdout",
            "unit": unit.astype(str),
            "converted": conv,
            "revenue": conv * rng.gamma(2, 30, n),
            "channel": rng.choice(["email", "push"], n),
            "offer": rng.choice(["OFF001", "OFF002"], n),
            "ts": pd.Timestamp("2026-11-16", tz="UTC")
            + pd.to_timedelta(rng.integers(0, 5 * 86400, n), unit="s"),
        }
    )


def test_report_text_and_html() -> None:
    df = _frame(holdout_share=0.15)  # configured: 5 % -> a loud SRM warning
    shares = {"nba": {"holdout": 0.05, "model": 0.855, "popular": 0.095}}
    rep = lift.build_report(df, shares)
    assert set(rep.lift["arm"]) == {"model", "popular"}
    assert set(rep.lift["metric"]) == {
        "conversion rate",
        "revenue / decision",
        "revenue / customer",
    }
    m = rep.lift[(rep.lift["arm"] == "model") & (rep.lift["metric"] == "conversion rate")].iloc[0]
    assert m["abs_low"] < 0.03 < m["abs_high"]
    cust = rep.lift[rep.lift["metric"] == "revenue / customer"].iloc[0]
    assert cust["n_holdout"] == df.loc[df["holdout"], "unit"].nunique()
    assert rep.srm[0].mismatch
    text = lift.render_text(rep)
    assert "SAMPLE RATIO MISMATCH" in text and "By channel" in text
    page = lift.render_html(rep)
    assert page.count("<svg") == 2 and "class='srm'" in page
    assert "<script" not in page and "<link" not in page and "src=" not in page
    ok = lift.build_report(_frame(holdout_share=0.05), shares)
    assert not ok.srm[0].mismatch
    assert "SAMPLE RATIO MISMATCH" not in lift.render_text(ok)
