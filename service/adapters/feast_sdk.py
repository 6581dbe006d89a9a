"""Online features through the Feast SDK, for online stores other than Redis.

On Redis the service reads Feast's own layout directly, in the same round trip as the
contact history (service/adapters/feast_redis.py, several times cheaper than the SDK). With
``NEXTBEST_FEATURE_SOURCE=feast`` it asks ``FeatureStore.get_online_features`` instead, so
any online store Feast supports (SQLite, PostgreSQL, DynamoDB, ...) can serve decisions;
Redis still holds contacts, purchases and real-time rows. The SDK call is synchronous, so it
runs in a worker thread, concurrently with the Redis read.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np
import numpy.typing as npt

from contracts.features import FeatureSpec

__all__ = ["FeastSdkFeatures"]

F64 = npt.NDArray[np.float64]
_TS = "__ts"  # feast.online_response.TIMESTAMP_POSTFIX


class FeastSdkFeatures:
    def __init__(self, store: Any) -> None:
        self.store = store

    def read_sync(
        self, customer_id: str, spec: FeatureSpec
    ) -> tuple[dict[str, F64] | None, dict[str, float]]:
        """(features as length-1 arrays, feature view -> newest timestamp) or (None, {})."""
        refs = [f"{view}:{name}" for view, names in spec.raw.items() for name in names]
        resp = self.store.get_online_features(
            features=refs, entity_rows=[{"customer_id": customer_id}]
        ).to_dict(include_event_timestamps=True)
        values: dict[str, F64] = {}
        stamps: dict[str, float] = {}
        for view, names in spec.raw.items():
            for name in names:
                v = resp[name][0]
                if v is not None:
                    ts = float(resp.get(name + _TS, [0])[0] or 0)
                    stamps[view] = max(stamps.get(view, 0.0), ts)
                values[name] = np.array([math.nan if v is None else float(v)])
        if not stamps:  # unknown customer: cold start, not an error
            return None, {}
        return values, stamps

    async def read(
        self, customer_id: str, spec: FeatureSpec
    ) -> tuple[dict[str, F64] | None, dict[str, float]]:
        return await asyncio.to_thread(self.read_sync, customer_id, spec)
