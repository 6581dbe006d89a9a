"""The public-data adapters write the input contract's tables (on the committed slices)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from contracts.tables import CUSTOMERS, EVENTS, MESSAGES, OFFERS
from training.datasets.adapters import adapt, bank_dates, retail_category

DATA = Path(__file__).resolve().parents[1] / "data"
SLICES = {
    "hillstrom": DATA / "hillstrom" / "hillstrom.csv",
    "bank": DATA / "bank_marketing" / "bank-additional-slice.csv",
    "retail": DATA / "online_retail" / "online_retail_slice.csv",
}


@pytest.mark.parametrize("name", list(SLICES))
def test_adapter_writes_the_contract(name: str, tmp_path: Path) -> None:
    counts = adapt(name, SLICES[name], tmp_path)
    vocab = json.loads((tmp_path / "vocabulary.json").read_text())
    for table in (CUSTOMERS, EVENTS, MESSAGES, OFFERS):
        df = pd.read_parquet(tmp_path / f"{table.name}.parquet")
        assert len(df) == counts[table.name]
        for col in table.columns:
            if col.required:
                assert col.name in df, f"{name}: {table.name}.{col.name} missing"
        if len(df):
            assert df[table.key].is_unique, f"{name}: duplicate {table.key}"
    customers = pd.read_parquet(tmp_path / "customers.parquet")
    for channel in vocab["channels"]:
        assert f"consent_{channel}" in customers
    offers = pd.read_parquet(tmp_path / "offers.parquet")
    assert set(offers["category"]) == set(vocab["categories"])
    assert (offers["price"] > 0).all() and offers["margin"].between(0, 1).all()
    messages = pd.read_parquet(tmp_path / "messages.parquet")
    if len(messages):
        assert set(messages["offer_id"]) <= set(offers["offer_id"])
        assert set(messages["customer_id"]) <= set(customers["customer_id"])
        assert set(messages["channel"]) <= set(vocab["channels"])
        assert not (messages["opened"] & ~messages["delivered"]).any()
        assert not (messages["converted"] & ~messages["opened"]).any()


def test_hillstrom_mapping(tmp_path: Path) -> None:
    adapt("hillstrom", SLICES["hillstrom"], tmp_path)
    raw = pd.read_csv(SLICES["hillstrom"])
    m = pd.read_parquet(tmp_path / "messages.parquet")
    emailed = raw[raw["segment"] != "No E-Mail"]
    assert len(m) == len(emailed)  # the no-e-mail third is the holdout: no message
    assert m["converted"].sum() == emailed["conversion"].sum()
    assert m["opened"].sum() == emailed["visit"].sum()
    assert m["propensity"].to_numpy() == pytest.approx([1 / 3] * len(m))
    assert set(m["offer_id"]) == {"mens_email", "womens_email"}


def test_bank_dates_are_ordered_on_the_right_weekday() -> None:
    raw = pd.read_csv(SLICES["bank"], sep=";")
    days = bank_dates(raw["month"], raw["day_of_week"])
    assert days.is_monotonic_increasing
    names = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    assert [names[d.weekday()] for d in days] == raw["day_of_week"].tolist()
    months = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
    assert [months[d.month - 1] for d in days] == raw["month"].tolist()
    assert days.iloc[0].year == 2008 and days.iloc[-1].year == 2010


def test_retail_categories_are_documented_rules() -> None:
    assert retail_category("WHITE HANGING HEART T-LIGHT HOLDER") == "lighting"
    assert retail_category("JUMBO BAG RED RETROSPOT") == "bags"
    assert retail_category("PAPER CHAIN KIT 50'S CHRISTMAS") == "christmas"
    assert retail_category("INFLATABLE POLITICAL GLOBE") == "other"
