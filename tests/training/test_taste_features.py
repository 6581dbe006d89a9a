"""Per-category taste features of the behaviour view (issue 16.5), point in time.

Checked against a direct computation from the raw events for sampled snapshot rows of the
session's small world (which went through ingest and the feature step), and through the
model input: the offer's category and price against the customer's taste.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from contracts.features import DEFAULT_SPEC, TASTE_OFFER_FEATURES
from contracts.tables import DataLayout
from service.features.vectors import propensity_matrix


@pytest.fixture(scope="module")
def tables(small_world: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    data = DataLayout(small_world)
    beh = pd.read_parquet(data.feature_table(DEFAULT_SPEC.behaviour.name))
    ev = pd.read_parquet(data.raw_table("events"))
    offers = pd.read_parquet(data.raw_table("offers"))
    return beh, ev, dict(zip(offers["offer_id"], offers["price"].astype(float), strict=True))


def test_taste_counts_only_events_before_the_snapshot(
    tables: tuple[pd.DataFrame, pd.DataFrame, dict[str, float]],
) -> None:
    beh, ev, price = tables
    rng = np.random.default_rng(0)
    rows = beh[beh["buys_" + DEFAULT_SPEC.categories[0]] > 0]
    picked = pd.concat([rows.sample(8, random_state=1), beh.sample(8, random_state=2)])
    for _, r in picked.iterrows():
        e = ev[(ev["customer_id"] == r["customer_id"]) & (ev["timestamp"] < r["event_timestamp"])]
        for c in rng.choice(DEFAULT_SPEC.categories, 3, replace=False):
            mine = e[e["category"] == c]
            assert r[f"views_{c}"] == (mine["type"] == "view").sum()
            assert r[f"carts_{c}"] == (mine["type"] == "cart_add").sum()
            assert r[f"buys_{c}"] == (mine["type"] == "purchase").sum()
            seen = mine[mine["type"].isin(["view", "cart_add", "purchase"])]
            if len(seen):
                days = (r["event_timestamp"] - seen["timestamp"].max()).total_seconds() / 86400
                assert r[f"days_{c}"] == pytest.approx(days, abs=1e-3)
            else:
                assert np.isnan(r[f"days_{c}"])
        bought = e.loc[e["type"] == "purchase", "value"]
        viewed = e.loc[e["type"] == "view", "offer_id"].map(price)
        if len(bought):
            assert r["avg_buy_price"] == pytest.approx(bought.mean(), rel=1e-5)
        else:
            assert np.isnan(r["avg_buy_price"])
        if len(viewed):
            assert r["avg_view_price"] == pytest.approx(viewed.mean(), rel=1e-5)


def test_the_model_sees_the_offer_against_the_customers_taste() -> None:
    spec = DEFAULT_SPEC
    raw = {n: np.array([np.nan]) for names in spec.raw.values() for n in names}
    home = spec.categories.index("home")
    raw.update({f"views_{c}": np.array([1.0]) for c in spec.categories})
    raw.update({f"buys_{c}": np.array([0.0]) for c in spec.categories})
    raw.update(views_home=np.array([9.0]), buys_home=np.array([2.0]), days_home=np.array([3.5]))
    raw.update(avg_buy_price=np.array([40.0]), avg_view_price=np.array([80.0]))
    x = propensity_matrix(
        spec, raw, 20000.0, np.zeros(2, dtype=np.int64), np.array([home, 0]),
        np.array([120.0, 10.0]), np.array([0.3, 0.3]), np.zeros(2, dtype=np.int64),
    )  # fmt: skip
    cols = {n: spec.propensity_features.index(n) for n in TASTE_OFFER_FEATURES}
    n_views = 9 + len(spec.categories) - 1
    assert x[0, cols["offer_category_views"]] == 9
    assert x[0, cols["offer_category_view_share_all"]] == pytest.approx(9 / n_views)
    assert x[0, cols["offer_category_buy_share"]] == pytest.approx(1.0)
    assert x[0, cols["offer_category_days"]] == pytest.approx(3.5)
    assert x[0, cols["offer_price_vs_buys"]] == pytest.approx(3.0)
    assert x[0, cols["offer_price_vs_views"]] == pytest.approx(1.5)
    assert x[1, cols["offer_category_buys"]] == 0 and np.isnan(x[1, cols["offer_category_days"]])
