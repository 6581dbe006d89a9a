"""The Feast repository, applied and materialized for real into SQLite and Redis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from contracts.features import DEFAULT_SPEC
from training.datasets.world import World

RAW_FEATURES = DEFAULT_SPEC.raw

SERVICES = {
    "propensity_v1": ("customer_profile", "customer_behaviour", "customer_engagement"),
    "send_time_v1": ("customer_engagement",),
    "channel_v1": ("customer_profile", "customer_engagement"),
}


def _latest(small_world: Path, view: str) -> pd.DataFrame:
    file = {
        "customer_profile": "customer_profile",
        "customer_behaviour": "customer_behaviour",
        "customer_engagement": "customer_engagement",
    }[view]
    df = pd.read_parquet(small_world / "features" / f"{file}.parquet")
    end = World.load(small_world).config.end_ts
    df = df[df["event_timestamp"] <= end].sort_values("event_timestamp")
    return df.groupby("customer_id").tail(1).set_index("customer_id")


def _check_store(store: Any, small_world: Path) -> None:
    profiles = pd.read_parquet(small_world / "features" / "customer_profile.parquet")
    sample = profiles["customer_id"].sample(40, random_state=1).tolist()
    for service, views in SERVICES.items():
        got = store.get_online_features(
            features=store.get_feature_service(service),
            entity_rows=[
                {"customer_id": c, **({"offer_id": "OFF001"} if service == "propensity_v1" else {})}
                for c in [*sample, "C_UNKNOWN"]
            ],
        ).to_dict()
        assert got["customer_id"][-1] == "C_UNKNOWN"
        for view in views:
            src = _latest(small_world, view)
            for name in RAW_FEATURES[view]:
                if name not in got:
                    continue
                values = got[name]
                assert values[-1] is None, f"unknown customer must be missing ({name})"
                for cid, v in zip(sample, values[:-1], strict=True):
                    want = src.loc[cid, name] if cid in src.index else None
                    if want is None or pd.isna(want):
                        assert v is None or (isinstance(v, float) and np.isnan(v)), (cid, name)
                    else:
                        assert v == pytest.approx(float(want), rel=1e-6), (service, cid, name)


class TestFeatureStore:
    def test_sqlite_online_values_equal_source(self, sqlite_store: Any, small_world: Path) -> None:
        _check_store(sqlite_store, small_world)

    @pytest.mark.redis
    def test_redis_online_values_equal_source(self, redis_store: Any, small_world: Path) -> None:
        _check_store(redis_store, small_world)

    def test_feature_views_have_schema_ttl_and_tags(self, sqlite_store: Any) -> None:
        views = {fv.name: fv for fv in sqlite_store.list_feature_views()}
        assert set(views) == {
            "customer_profile",
            "customer_behaviour",
            "customer_engagement",
            "offer_catalogue",
        }
        for fv in views.values():
            assert fv.ttl.total_seconds() > 0
            assert fv.tags.get("owner")
            assert fv.features
        for name, raw in RAW_FEATURES.items():
            assert [f.name for f in views[name].features] == list(raw)


@pytest.mark.redis
def test_fresh_materialization_drops_rows_of_earlier_data(
    small_world: Path, redis_url: str, redis_store: Any
) -> None:
    """Materialization keeps a stored row unless the new one is newer: rows of an earlier
    world survive a plain re-run. ``clear_online`` (what ``all``/``--fresh`` do) fixes it."""
    from training.pipeline.featurestore import apply, clear_online, materialize

    latest = _latest(small_world, "customer_engagement")
    cid = str(latest["click_rate"].dropna().index[0])
    truth = latest.loc[cid, "click_rate"]

    def click_rate() -> float:
        got = redis_store.get_online_features(
            features=["customer_engagement:click_rate"], entity_rows=[{"customer_id": cid}]
        ).to_dict()
        return float(got["click_rate"][0])

    assert click_rate() == pytest.approx(truth)
    stale = pd.DataFrame(  # a row from "another world", stamped later than this one's
        {
            "customer_id": [cid],
            "event_timestamp": [pd.Timestamp("2030-01-01", tz="UTC")],
            **{f: [0.0] for f in RAW_FEATURES["customer_engagement"]},
            "click_rate": [0.987],
        }
    )
    redis_store.write_to_online_store("customer_engagement", stale)
    end = World.load(small_world).config.end_ts
    materialize("redis", redis_url, end=end)
    assert click_rate() == pytest.approx(0.987)  # the stale row survived
    assert clear_online("redis", redis_url) >= 4
    apply("redis", redis_url)
    materialize("redis", redis_url, end=end)
    assert click_rate() == pytest.approx(truth)
