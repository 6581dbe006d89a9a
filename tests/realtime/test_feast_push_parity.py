"""The direct writer of `customer_realtime` rows equals Feast's own `FeatureStore.push`."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest
import redis
import redis.asyncio as aioredis
from feast.data_source import PushMode
from feast.protos.feast.types.Value_pb2 import Value
from google.protobuf.timestamp_pb2 import Timestamp

from contracts.features import REALTIME
from service.adapters.feast_redis import decode_timestamp, decode_value
from service.realtime.features import (
    FeastRowWriter,
    encode_float32,
    encode_int64,
    encode_string,
    encode_timestamp,
)

ROW = {
    "cart_items_rt": 3,
    "cart_value_rt": 74.25,
    "last_cart_add_ts": 1_795_000_123,
    "last_purchase_ts": 0,
    "purchases_1h": 1,
    "session_views_1h": 12,
    "messages_opened_24h": 0,
    "last_event_ts": 1_795_000_456,
}


@pytest.mark.parametrize("v", [0, 1, 127, 128, 1_795_000_123, -1, -(2**40), 2**62])
def test_int64_encoding_equals_protobuf(v: int) -> None:
    assert encode_int64(v) == Value(int64_val=v).SerializeToString()


@pytest.mark.parametrize("v", [0.0, 1.5, 74.25, 1e9, 3.3])
def test_float_and_string_encoding_equal_protobuf(v: float) -> None:
    assert encode_float32(v) == Value(float_val=v).SerializeToString()
    assert decode_value(encode_float32(v)) == pytest.approx(v, rel=1e-7)
    assert encode_string("C0001") == Value(string_val="C0001").SerializeToString()


@pytest.mark.parametrize("us", [1_795_000_000_000_000, 1_795_000_000_123_456, 1])
def test_timestamp_encoding_equals_protobuf(us: int) -> None:
    ts = Timestamp(seconds=us // 1_000_000, nanos=us % 1_000_000 * 1000)
    assert encode_timestamp(us) == ts.SerializeToString()
    assert decode_timestamp(encode_timestamp(us)) == pytest.approx(us / 1e6)


@pytest.mark.redis
@pytest.mark.anyio
async def test_direct_write_equals_feast_push(redis_store: Any, redis_url: str, uid: str) -> None:
    a, b = f"{uid}_push", f"{uid}_direct"
    when = datetime(2026, 11, 20, 10, 30, 15, 250000, tzinfo=UTC)
    df = pd.DataFrame([{"customer_id": a, "event_timestamp": when, **ROW}])
    df["cart_value_rt"] = df["cart_value_rt"].astype("float32")
    redis_store.push("customer_events_push", df, to=PushMode.ONLINE)

    client = aioredis.Redis.from_url(redis_url)
    writer = FeastRowWriter(client)
    us = int(when.timestamp() * 1_000_000)
    assert await writer.write(b, ROW, us)
    assert not await writer.write(b, ROW, us)  # Feast's rule: equal or older rows are skipped
    await client.aclose()

    sync = redis.Redis.from_url(redis_url)
    ha, hb = sync.hgetall(writer.key(a)), sync.hgetall(writer.key(b))
    join = writer._join_field
    assert set(ha) == set(hb)  # same fields: every feature, the join key and _ts
    assert ha.pop(join) == encode_string(a) and hb.pop(join) == encode_string(b)
    assert ha == hb  # byte for byte

    names = [f"{REALTIME.name}:{f}" for f in REALTIME.names]
    got = redis_store.get_online_features(
        features=names, entity_rows=[{"customer_id": a}, {"customer_id": b}]
    ).to_dict()
    for f in REALTIME.names:
        va, vb = got[f]
        assert va == vb and not (isinstance(va, float) and math.isnan(va)), f
        assert va == pytest.approx(ROW[f]), f


@pytest.mark.redis
@pytest.mark.anyio
async def test_writer_never_goes_backwards(redis_url: str, uid: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    writer = FeastRowWriter(client)
    assert await writer.write(uid, {**ROW, "cart_items_rt": 5}, 2_000_000)
    assert not await writer.write(uid, {**ROW, "cart_items_rt": 1}, 1_000_000)
    raw = await client.hget(writer.key(uid), writer._fields["cart_items_rt"])
    assert decode_value(raw) == 5
    await client.aclose()
