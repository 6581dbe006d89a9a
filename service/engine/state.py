"""Reading a unit's state for a decision: one pipelined Redis round trip, or Redis + the SDK.

Features older than their view's TTL are dropped here (treated as missing, flagged
``features_stale:<view>``): :mod:`service.features.freshness`.

When Redis is skipped or fails the read returns None and flags the decision degraded: the
decision then takes the documented fallback (population priors, no capped channel).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any, Protocol

from contracts.features import FeatureSpec
from service.adapters.redis_store import CustomerState, RedisStore
from service.engine.guard import RedisGuard, RedisSkipped
from service.features.freshness import drop_stale

__all__ = ["FeatureReader", "StateReader"]

log = logging.getLogger("nextbest.engine")


class FeatureReader(Protocol):
    """Online features of one customer: (name -> length-1 array, view -> row timestamp)."""

    async def read(
        self, customer_id: str, spec: FeatureSpec
    ) -> tuple[dict[str, Any] | None, dict[str, float]]: ...


class StateReader:
    def __init__(
        self,
        store: RedisStore,
        guard: RedisGuard,
        features: FeatureReader | None = None,
        feature_timeout_s: float = 0.1,
    ) -> None:
        self.store = store
        self.guard = guard
        #: None: features ride in the Redis state read (Feast's layout); else read through
        #: this (the Feast SDK, any online store), concurrently, within feature_timeout_s
        self.features = features
        self.feature_timeout = feature_timeout_s

    async def read(
        self,
        unit: str,
        known: bool,
        now: float,
        spec: FeatureSpec,
        degraded: list[str],
        extra: Any = None,
    ) -> CustomerState | None:
        if self.features is not None and known:
            state = await self._with_sdk(unit, now, spec, degraded, extra)
        else:
            state = await self._redis(unit, now, spec if known else None, degraded, extra)
        if state is None or state.features is None:
            return state
        fresh = drop_stale(state.features, state.feature_stamps, spec.customer_views, now)
        if not fresh.stale:
            return state
        degraded.extend(f"features_stale:{v}" for v in fresh.stale)
        return dataclasses.replace(state, features=fresh.features, feature_ts=fresh.newest)

    async def _with_sdk(
        self, unit: str, now: float, spec: FeatureSpec, degraded: list[str], extra: Any
    ) -> CustomerState | None:
        """Redis state (contacts, purchases, real-time row) and SDK features, concurrently."""
        assert self.features is not None
        sdk = asyncio.wait_for(self.features.read(unit, spec), self.feature_timeout)
        redis_state = self._redis(unit, now, None, degraded, extra)
        got_state, feats = await asyncio.gather(redis_state, sdk, return_exceptions=True)
        if not isinstance(got_state, CustomerState):  # Redis failed: the usual fallback
            return None
        if isinstance(feats, BaseException):
            degraded.append("features_unavailable")
            log.warning("feature read failed: %s", type(feats).__name__)
            return got_state
        values, stamps = feats
        ts = max(stamps.values()) if stamps else None
        return dataclasses.replace(got_state, features=values, feature_ts=ts, feature_stamps=stamps)

    async def _redis(
        self,
        unit: str,
        now: float,
        spec: FeatureSpec | None,
        degraded: list[str],
        extra: Any,
    ) -> CustomerState | None:
        """The one pipelined state read; None (flagged degraded) when Redis is skipped/fails."""
        try:
            return await self.guard.call(self.store.read_customer(unit, now, spec, extra=extra))
        except Exception as exc:  # skipped (breaker open), timeout, connection refused, ...
            if extra is not None:
                degraded.append("realtime_unavailable")
            degraded.append("redis_unavailable")
            if not isinstance(exc, RedisSkipped):
                log.warning("state read failed: %s", type(exc).__name__)
            return None
