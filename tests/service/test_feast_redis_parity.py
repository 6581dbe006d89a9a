"""The service's direct read of Feast's Redis layout equals Feast's own get_online_features."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import redis
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

from contracts.features import DEFAULT_SPEC
from service.adapters.feast_redis import FeastRedisLayout, decode_value, entity_key

pytestmark = pytest.mark.redis


def test_entity_key_matches_feast() -> None:
    for cid in ("C0000001", "C9", "ünïcode-id"):
        ek = EntityKey(join_keys=["customer_id"], entity_values=[Value(string_val=cid)])
        want = serialize_entity_key(ek, entity_key_serialization_version=3) + b"nextbest"
        assert entity_key("customer_id", cid, "nextbest") == want


@pytest.mark.parametrize(
    "value",
    [
        Value(int64_val=5),
        Value(int64_val=-3),
        Value(int64_val=0),
        Value(int32_val=7),
        Value(float_val=0.25),
        Value(double_val=-1.5),
        Value(bool_val=True),
        Value(),
    ],
)
def test_value_decoder_matches_protobuf(value: Value) -> None:
    kind = value.WhichOneof("val")
    got = decode_value(value.SerializeToString())
    if kind is None:
        assert math.isnan(got)
    else:
        assert got == pytest.approx(float(getattr(value, kind)))


def test_direct_read_equals_feast_sdk(redis_store: Any, redis_url: str, small_world: Path) -> None:
    layout = FeastRedisLayout(DEFAULT_SPEC.raw, project="nextbest")
    client = redis.Redis.from_url(redis_url)
    ids = pd.read_parquet(small_world / "features" / "customer_profile.parquet")["customer_id"]
    sample = [*ids.sample(60, random_state=3).tolist(), "C_NOT_THERE"]
    names = [f"{view}:{f}" for view, feats in DEFAULT_SPEC.raw.items() for f in feats]
    sdk = redis_store.get_online_features(
        features=names, entity_rows=[{"customer_id": c} for c in sample]
    ).to_dict()
    checked = 0
    for i, cid in enumerate(sample):
        values, ts = layout.decode(client.hmget(layout.key(cid), layout.all_fields))
        if cid == "C_NOT_THERE":
            assert values is None and not ts
            continue
        assert values is not None and ts
        for name in layout.names:
            want = sdk[name][i]
            got = float(values[name][0])
            if want is None:
                assert math.isnan(got), (cid, name)
            else:
                assert got == pytest.approx(float(want), rel=1e-7), (cid, name)
            checked += 1
    assert checked == 60 * len(layout.names)
