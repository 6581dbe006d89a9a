"""The Bank Marketing adapter on a synthetic file of the same shape (no ../shared needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from training.datasets.bank import MONTHS, WEEKDAYS, load_bank, run_bank


def _fake_bank(path: Path, n: int = 3000) -> Path:
    rng = np.random.default_rng(0)
    contact = rng.choice(["cellular", "telephone"], n)
    campaign = rng.integers(1, 6, n)
    logit = -2.0 + 1.2 * (contact == "cellular") - 0.3 * campaign
    y = rng.random(n) < 1 / (1 + np.exp(-logit))
    df = pd.DataFrame(
        {
            "age": rng.integers(18, 90, n),
            "job": rng.choice(["admin.", "services", "retired"], n),
            "marital": rng.choice(["married", "single"], n),
            "education": rng.choice(["basic.4y", "university.degree"], n),
            "default": "no",
            "housing": rng.choice(["yes", "no"], n),
            "loan": "no",
            "contact": contact,
            "month": rng.choice(list(MONTHS), n),
            "day_of_week": rng.choice(list(WEEKDAYS), n),
            "duration": rng.integers(1, 900, n),  # must be dropped
            "campaign": campaign,
            "pdays": np.where(rng.random(n) < 0.9, 999, rng.integers(0, 20, n)),
            "previous": 0,
            "poutcome": "nonexistent",
            "emp.var.rate": 1.1,
            "cons.price.idx": 93.9,
            "cons.conf.idx": -36.4,
            "euribor3m": 4.8,
            "nr.employed": 5191.0,
            "y": np.where(y, "yes", "no"),
        }
    )
    out = path / "bank.csv.gz"
    df.to_csv(out, sep=";", index=False)
    return out


def test_bank_adapter(tmp_path: Path) -> None:
    path = _fake_bank(tmp_path)
    x, y = load_bank(path)
    assert set(np.unique(y)) == {0, 1}
    assert "duration" not in x and "y" not in x
    assert {"channel", "month_idx", "weekday_idx"} <= set(x.columns)
    assert x["pdays"].isna().mean() > 0.5
    res = run_bank(path)
    assert res["train_rows"] == 2700 and res["test_rows"] == 300
    assert res["auc"] > 0.6
