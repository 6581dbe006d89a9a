"""The feature step: point in time, the views the contract declares, one implementation on
two engines (DuckDB and Spark give the same tables), and the generator's round trip."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from contracts.features import feature_spec
from contracts.vocabulary import load_vocabulary
from training.datasets.world import WorldConfig, build_world
from training.features import compute_features, snapshot_times
from training.ingest import ingest

START = datetime(2026, 1, 1, tzinfo=UTC)
AS_OF = START + timedelta(days=30)  # snapshots: Jan 8, 15, 22, 29, 31
VIEWS = ("customer_profile", "customer_behaviour", "customer_engagement", "offer_catalogue")


def _source(path: Path, events: list[tuple[str, str, datetime, float]]) -> Path:
    """One customer (Paris) and two offers; ``events``: (type, offer, time, value)."""
    path.mkdir(parents=True)
    pd.DataFrame(
        {
            "customer_id": ["C1", "C2"],
            "signup_at": [START - timedelta(days=1), START + timedelta(days=10)],
            "timezone": ["Europe/Paris", None],
            "consent_email": [True, True],
            "consent_push": [False, True],
            "consent_sms": [True, False],
            "opted_out": [False, True],
        }
    ).to_parquet(path / "customers.parquet")
    pd.DataFrame(
        {
            "offer_id": ["O1", "O2"],
            "name": ["shoe", "book"],
            "category": ["shoes", "books"],
            "price": [10.0, 20.0],
            "margin": [0.3, 0.5],
            "valid_from": [START - timedelta(days=60)] * 2,
            "valid_to": [START + timedelta(days=365)] * 2,
        }
    ).to_parquet(path / "offers.parquet")
    rows = [(f"E{i}", "C1", t, o, ts, v) for i, (t, o, ts, v) in enumerate(events)]
    # the first accepted event sets the history's start (its UTC midnight)
    rows.append(("E_first", "C1", "view", "O2", START, 0.0))
    pd.DataFrame(
        rows, columns=["event_id", "customer_id", "type", "offer_id", "timestamp", "value"]
    ).assign(category=None).to_parquet(path / "events.parquet")
    pd.DataFrame(
        {
            "message_id": ["M1", "M2", "M3"],
            "customer_id": ["C1", "C1", "C1"],
            "offer_id": ["O1", "O1", "O2"],
            "channel": ["email", "email", "sms"],
            "sent_at": [START + timedelta(days=2), START + timedelta(days=3),
                        START + timedelta(days=7)],  # M3: exactly at the first snapshot
            "delivered": [True, True, True],
            "opened": [True, False, True],
            "clicked": [True, False, False],
            "converted": [False, False, False],
        }
    ).to_parquet(path / "messages.parquet")  # fmt: skip
    return path


def _row(df: pd.DataFrame, cid: str, at: datetime) -> pd.Series:
    hit = df[(df["customer_id"] == cid) & (df["event_timestamp"] == pd.Timestamp(at))]
    assert len(hit) == 1, (cid, at)
    return hit.iloc[0]


def test_point_in_time(tmp_path: Path) -> None:
    t1 = START + timedelta(days=7)  # the first snapshot
    t4 = START + timedelta(days=28)
    events = [
        ("purchase", "O1", t1 - timedelta(seconds=1), 10.0),  # just before t1: counts at t1
        ("purchase", "O1", t1, 10.0),  # exactly at t1: not at t1, at the next one
        ("purchase", "O2", t1 + timedelta(hours=1), 20.0),  # after t1
        ("cart_abandon", "O1", t4 - timedelta(days=7), 10.0),  # first second of t4's week
        ("cart_abandon", "O1", t4 - timedelta(days=7, seconds=1), 10.0),  # just outside it
        ("view", "O1", START + timedelta(days=1, hours=7, minutes=30), 0.0),  # 8h in Paris
    ]
    source = _source(tmp_path / "src", events)
    data = tmp_path / "data"
    ingest(source, data, as_of=AS_OF)
    run = compute_features(data)
    assert run.snapshots == snapshot_times(START, AS_OF) and run.snapshots[-1] == AS_OF
    assert len(run.snapshots) == 5
    beh = pd.read_parquet(data / "features" / "customer_behaviour.parquet")
    eng = pd.read_parquet(data / "features" / "customer_engagement.parquet")

    at1 = _row(beh, "C1", t1)
    assert at1["frequency_90d"] == 1 and at1["monetary_90d"] == pytest.approx(10.0)
    assert at1["recency_days"] == pytest.approx(1 / 86400, rel=1e-3)
    assert at1["views_total"] == 2 and at1["views_shoes_30d"] == 1
    at2 = _row(beh, "C1", START + timedelta(days=14))
    assert at2["frequency_90d"] == 3 and at2["monetary_90d"] == pytest.approx(40.0)
    at4 = _row(beh, "C1", t4)
    assert at4["cart_abandons_7d"] == 1  # [t4 - 7 days, t4)
    assert _row(beh, "C1", START + timedelta(days=21))["cart_abandons_7d"] == 1
    # 28-day view window: the shoe view of Jan 2 has left it by Jan 31
    assert _row(beh, "C1", AS_OF)["views_shoes_30d"] == 0
    assert _row(beh, "C1", t4)["views_shoes_30d"] == 1

    e1 = _row(eng, "C1", t1)
    assert (e1["sent_email"], e1["sent_sms"]) == (2, 0)  # M3 is at t1: not yet
    assert e1["open_rate_email"] == pytest.approx(0.5) and np.isnan(e1["open_rate_sms"])
    assert e1["click_rate"] == pytest.approx(1.0)
    e2 = _row(eng, "C1", START + timedelta(days=14))
    assert (e2["sent_sms"], e2["open_rate_sms"]) == (1, pytest.approx(1.0))
    assert e2["click_rate"] == pytest.approx(0.5)
    # activity hours in the customer's zone (Paris, UTC+1 in January): 7:30 UTC is 8h
    share = e1[[f"act_share_h{h:02d}" for h in range(24)]].to_numpy(dtype=float)
    assert share.sum() == pytest.approx(1.0) and share[8] == pytest.approx(1 / 3)

    # C2 signs up on Jan 11: no snapshot rows before; opted out: no consent
    assert set(beh.loc[beh["customer_id"] == "C2", "event_timestamp"]) == {
        pd.Timestamp(t) for t in run.snapshots if t > START + timedelta(days=10)
    }
    prof = pd.read_parquet(data / "features" / "customer_profile.parquet").set_index("customer_id")
    assert prof.loc["C1", "tz_offset"] == 1 and prof.loc["C2", "tz_offset"] == 0
    assert prof.loc["C2", ["consent_email", "consent_push", "opted_out"]].tolist() == [0, 0, 1]
    assert prof.loc["C1", "consent_sms"] == 1 and prof.loc["C1", "consent_web"] == 1
    # no lifecycle column: derived (C2 signed up within 30 days of the end: new)
    assert prof.loc["C2", "lifecycle"] == 0 and prof.loc["C1", "lifecycle"] == 1


def test_generator_round_trip(tmp_path: Path) -> None:
    """generate -> ingest -> features: nothing rejected, every view with the contract's
    columns and types, one row per customer and snapshot after sign-up."""
    cfg = WorldConfig(n_customers=400, seed=5)
    out = build_world(cfg, tmp_path / "w")
    report = out["ingest"]
    assert all(t.rejected == 0 for t in report.tables.values()), report.tables
    assert report.tables["events"].accepted == out["generated"]["events"]
    data = tmp_path / "w"
    spec = feature_spec(load_vocabulary(data / "vocabulary.json"))
    customers = pd.read_parquet(data / "raw" / "customers.parquet")
    snaps = out["features"].snapshots
    assert snaps[-1] == cfg.end_ts and snaps[0] == cfg.start_ts + timedelta(days=7)
    for name in VIEWS:
        df = pd.read_parquet(data / "features" / f"{name}.parquet")
        view = spec.view(name)
        assert list(df.columns[: 2 + len(view.names)]) == [
            view.join_key,
            "event_timestamp",
            *view.names,
        ]
        for f in view.features:  # the catalogue keeps exact prices (Feast reads float32)
            want = "float64" if name == "offer_catalogue" and f.dtype == "float32" else f.dtype
            assert str(df[f.name].dtype) == want, (name, f.name)
    beh = pd.read_parquet(data / "features" / "customer_behaviour.parquet")
    signup = customers["signup_at"].to_numpy()
    expected = sum(int((np.array([pd.Timestamp(t) for t in snaps]) > s).sum()) for s in signup)
    assert len(beh) == expected


# ------------------------------------------------------------------------- two engines


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    pytest.importorskip("pyspark")
    from training.features import spark_session

    session = spark_session("local[1]")
    yield session
    session.stop()


@pytest.mark.spark
@pytest.mark.slow
def test_duckdb_and_spark_give_the_same_tables(tmp_path: Path, spark: Any) -> None:
    from training.features import connect

    data = tmp_path / "w"
    build_world(WorldConfig(n_customers=150, seed=11), data)
    duck = {v: pd.read_parquet(data / "features" / f"{v}.parquet") for v in VIEWS}
    compute_features(data, engine="spark", con=connect("spark", spark))
    for v in VIEWS:
        sp = pd.read_parquet(data / "features" / f"{v}.parquet")
        key = "offer_id" if v == "offer_catalogue" else "customer_id"
        a = duck[v].sort_values([key, "event_timestamp"]).reset_index(drop=True)
        b = sp.sort_values([key, "event_timestamp"]).reset_index(drop=True)
        assert len(a) > 0
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-6, atol=1e-9)
