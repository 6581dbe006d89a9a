"""Hillstrom validation on synthetic data with the same columns (no dependence on ../shared)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.cli import main
from training.datasets import hillstrom
from training.measurement import hillstrom_validation


def test_lift_check_reproduces_direct_differences() -> None:
    df = hillstrom.synthetic_hillstrom(6000, seed=1)
    check = hillstrom_validation.lift_check(df)
    assert check.ok
    mens = check.report.lift[
        (check.report.lift["arm"] == "Mens E-Mail") & (check.report.lift["metric"] == "visit rate")
    ].iloc[0]
    d = check.direct
    assert mens["arm_mean"] == pytest.approx(d.loc["Mens E-Mail", "visit"])
    assert mens["holdout_mean"] == pytest.approx(d.loc["No E-Mail", "visit"])
    assert not check.report.srm[0].mismatch


def test_uplift_policy_beats_sending_nothing() -> None:
    df = hillstrom.synthetic_hillstrom(9000, seed=2)
    res = hillstrom_validation.uplift_policy(df, target="visit", seed=0)
    t = res.table[(res.table["outcome"] == "visit") & (res.table["method"] == "DR")]
    v = dict(zip(t["policy"], t["value"], strict=True))
    model = next(k for k in v if k.startswith("uplift"))
    assert v[model] > v["send nothing"] + 0.02
    assert v[model] >= max(v["men's e-mail to everyone"], v["random"]) - 0.01
    # constant policies: the estimate is close to the arm mean on the test split
    assert v["send nothing"] == pytest.approx(res.truth.loc["No E-Mail", "visit"], abs=0.02)
    assert abs(sum(res.chosen_share.values()) - 1) < 1e-9
    assert res.n_train + res.n_test == len(df)
    assert "uplift model" in hillstrom_validation.render_uplift(res)
    # paired differences on the same test rows: the model beats sending nothing, and the
    # paired interval is narrower than the two separate DR intervals would suggest
    d = res.differences.set_index(["versus", "outcome"])
    assert len(d) == 4 * 3
    nothing = d.loc[("send nothing", "visit")]
    assert nothing["low"] > 0
    sep = t.set_index("policy")
    width = (sep.loc[model, "high"] - sep.loc[model, "low"]) + (
        sep.loc["send nothing", "high"] - sep.loc["send nothing", "low"]
    )
    assert nothing["high"] - nothing["low"] < width


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "h.csv"
    hillstrom.synthetic_hillstrom(4000, seed=3).to_csv(path, index=False)
    html = tmp_path / "h.html"
    assert main(["hillstrom", "--path", str(path), "--html", str(html)]) == 0
    out = capsys.readouterr().out
    assert "REPRODUCED" in out and "men's e-mail to everyone" in out
    assert html.read_text().startswith("<!doctype html>")
    assert np.isfinite(hillstrom.features(hillstrom.load(path))).all()
