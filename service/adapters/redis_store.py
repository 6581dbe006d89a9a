"""Everything the service keeps in Redis about customers and decisions, behind one adapter.

The keys are built by :mod:`contracts.keys` (the whole keyspace is documented there). A
decision's marker, its feedback markers and the streams it is appended to share one hash tag
(its log shard), so the idempotent feedback script touches one slot even on a Redis Cluster.
Readers merge the 16 shards (:func:`contracts.keys.decision_streams`) in time order.

Reads for a decision are one pipelined round trip (features + contacts + purchases, plus the
real-time row and cart queued by an :class:`ExtraRead`); writes after it are a second
(atomic cap reservation + log append).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import redis.asyncio as aioredis

from contracts.feast_repo import CANARY_ENTITY
from contracts.features import FeatureSpec
from contracts.keys import (
    contacts_key,
    decision_key,
    decision_stream,
    decision_streams,
    effect_marker_key,
    feedback_marker_key,
    feedback_stream,
    feedback_streams,
    purchased_key,
)
from contracts.records import DecisionRecord, FeedbackRecord, decode_decision, decode_feedback
from service.adapters.feast_redis import FeastRedisLayout
from service.domain.config import ContactPolicy

__all__ = [
    "EVICTING_POLICIES",
    "CustomerState",
    "EvictingPolicy",
    "ExtraRead",
    "RedisStore",
    "log_backlog",
    "memory_policy",
    "read_decisions",
    "read_feedback",
    "read_log",
    "sync_client",
]

F64 = npt.NDArray[np.float64]


# Atomically check every cap and record the contact if all hold.
# KEYS[1] contacts zset; ARGV: now, member, channel, ttl, n_capped, capped..., then triples
# (cap_channel, max, window_seconds). Returns 0 when recorded, else 1-based index of the cap.
RESERVE_LUA = """
local now = tonumber(ARGV[1])
local member = ARGV[2]
local channel = ARGV[3]
local ttl = tonumber(ARGV[4])
local ncapped = tonumber(ARGV[5])
local capped = {}
for i = 1, ncapped do capped[ARGV[5 + i]] = true end
local base = 6 + ncapped
local ncaps = (#ARGV - base + 1) / 3
for c = 0, ncaps - 1 do
  local cap_ch = ARGV[base + 3 * c]
  local max = tonumber(ARGV[base + 3 * c + 1])
  local window = tonumber(ARGV[base + 3 * c + 2])
  if cap_ch == channel or cap_ch == '*' then
    local used = 0
    local rows = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (now - window), now)
    for _, m in ipairs(rows) do
      local ch = string.match(m, '^[^|]*|([^|]*)|')
      if capped[ch] and (cap_ch == '*' or ch == channel) then used = used + 1 end
    end
    if used + 1 > max then return c + 1 end
  end
end
redis.call('ZADD', KEYS[1], now, member)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
redis.call('EXPIRE', KEYS[1], ttl)
return 0
"""

# A decision's marker is one small hash for the feedback window (listpack-encoded: one key
# and one TTL per decision): field ``m`` = the compact marker (contracts.records.encode_marker),
# one field per outcome event logged for it (the outcome's idempotency marker). Markers of
# earlier versions (a string, plus a string key per outcome) are still read and honoured.

# KEYS[1] decision marker, KEYS[2] decision stream; ARGV: summary, ttl, maxlen, record.
# The marker doubles as the idempotency marker: a replayed decision lands once.
DECISION_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'm', ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
redis.call('XADD', KEYS[2], 'MAXLEN', '~', tonumber(ARGV[3]), '*', 'record', ARGV[4])
return 1
"""

# KEYS[1] decision marker, KEYS[2] outcome marker of an earlier version's decision (a string
# key), KEYS[3] feedback stream. ARGV: ttl, maxlen, payload, event. Returns {0} unknown
# decision, {1, marker} accepted, {2, marker} duplicate; the decision's marker rides along for
# the outcome's effects.
FEEDBACK_LUA = """
local kind = redis.call('TYPE', KEYS[1])['ok']
local marker
if kind == 'hash' then
  marker = redis.call('HGET', KEYS[1], 'm')
  if not marker then return {0} end
  if redis.call('HSETNX', KEYS[1], ARGV[4], '1') == 0 then return {2, marker} end
elseif kind == 'string' then
  marker = redis.call('GET', KEYS[1])
  if redis.call('SET', KEYS[2], '1', 'NX', 'EX', tonumber(ARGV[1])) == false then
    return {2, marker}
  end
else
  return {0}
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', tonumber(ARGV[2]), '*', 'record', ARGV[3])
return {1, marker}
"""

# KEYS[1] decision marker -> its compact marker (either layout), or false
GET_MARKER_LUA = """
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'hash' then return redis.call('HGET', KEYS[1], 'm') end
if kind == 'string' then return redis.call('GET', KEYS[1]) end
return false
"""

# What an outcome implies for its unit, applied once: the effect and its marker in one script
# (one slot: every key is the unit's). KEYS[1] effect marker, KEYS[2] the unit's purchased
# set or contacts zset. ARGV: marker ttl, kind ('purchase' | 'contact'), member, key ttl,
# score (contact: epoch). Returns 1 applied now, 0 applied before.
EFFECT_LUA = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[1])) == false then return 0 end
if ARGV[2] == 'purchase' then
  redis.call('SADD', KEYS[2], ARGV[3])
else
  local at = tonumber(ARGV[5])
  redis.call('ZADD', KEYS[2], at, ARGV[3])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', at - tonumber(ARGV[4]))
end
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4]))
return 1
"""

PURCHASE_TTL_S = 365 * 86400
#: maxmemory policies under which Redis deletes keys to make room: features, contact
#: histories, real-time state or the log backlog would silently go
EVICTING_POLICIES = frozenset(
    f"{scope}-{how}" for scope in ("allkeys", "volatile") for how in ("lru", "lfu", "random")
) | {"volatile-ttl"}


class EvictingPolicy(RuntimeError):
    """Redis is configured to evict keys: the service refuses to start on it."""


async def memory_policy(client: Any) -> str | None:
    """Redis's ``maxmemory-policy`` (None: CONFIG is disabled or renamed, as managed Redis
    services often do; every node's of a cluster must agree: the first evicting one wins).

    Raises :class:`EvictingPolicy` for a policy that evicts keys (``allkeys-*``,
    ``volatile-*``): the keyspace of features, contacts and real-time state has no key that
    may be dropped, and the log backlog holds accepted decisions. ``noeviction`` makes Redis
    refuse writes when full instead; the service then spools them locally (never losing an
    accepted decision) and /ready reports the backlog before that happens.
    """
    try:
        reply = await client.config_get("maxmemory-policy")
    except Exception:  # ResponseError: unknown command / NOPERM; nothing to check
        return None
    values: list[str] = []

    def collect(reply: Any) -> None:  # {param: value}, or a cluster's {node: {param: value}}
        if not isinstance(reply, dict):
            return
        for k, v in reply.items():
            if k in ("maxmemory-policy", b"maxmemory-policy"):
                values.append(v.decode() if isinstance(v, bytes) else str(v))
            else:
                collect(v)

    collect(reply)
    if not values:
        return None
    for policy in values:
        if policy in EVICTING_POLICIES:
            raise EvictingPolicy(
                f"Redis maxmemory-policy is {policy!r}: it evicts keys when memory is full, "
                "and this Redis holds features, contact histories, real-time state and the "
                "decision-log backlog, none of which may be dropped. Set "
                "`maxmemory-policy noeviction` (see docs/operations.md, 'Redis memory')"
            )
    return values[0]


async def log_backlog(client: Any) -> tuple[int, float]:
    """(decision + feedback stream entries not yet exported, age in seconds of the oldest;
    0 when none): the exporter deletes what it wrote, so what is left is its backlog."""
    streams = [*decision_streams(), *feedback_streams()]
    async with client.pipeline(transaction=False) as pipe:
        for s in streams:
            pipe.xlen(s)
            pipe.xrange(s, "-", "+", count=1)
        replies = await pipe.execute()
    entries = sum(int(n) for n in replies[0::2])
    oldest = [int(r[0][0].split(b"-")[0]) for r in replies[1::2] if r]
    age = max(time.time() - min(oldest) / 1000.0, 0.0) if oldest else 0.0
    return entries, age


@dataclass(frozen=True, slots=True)
class CustomerState:
    features: dict[str, F64] | None
    feature_ts: float | None
    contacts: list[tuple[float, str]]
    purchased: frozenset[str]
    #: what an :class:`ExtraRead` parsed from its replies (same round trip), else None
    extra: Any = None
    #: feature view -> timestamp of its row (``feature_ts`` is the newest of those used)
    feature_stamps: Mapping[str, float] = field(default_factory=dict)


class ExtraRead(Protocol):
    """More reads of the same unit that ride in the decision's one pipelined round trip."""

    def queue(self, pipe: Any, unit: str) -> int:
        """Queue the commands on ``pipe``; return how many."""
        ...

    def parse(self, replies: list[Any]) -> Any: ...


class RedisStore:
    def __init__(
        self,
        client: aioredis.Redis,
        policy: ContactPolicy,
        project: str = "nextbest",
        log_maxlen: int = 10_000_000,
        record_ttl_s: int = 30 * 86400,
    ) -> None:
        self.client = client
        self.project = project
        self._layouts: dict[FeatureSpec, FeastRedisLayout] = {}
        self.policy = policy
        self.log_maxlen = log_maxlen
        self.record_ttl_s = record_ttl_s
        self.window_s = max((c.window_hours for c in policy.caps), default=24.0) * 3600.0
        self._reserve = client.register_script(RESERVE_LUA)
        self._feedback = client.register_script(FEEDBACK_LUA)
        self._decision = client.register_script(DECISION_LUA)
        self._effect = client.register_script(EFFECT_LUA)
        self._get_marker = client.register_script(GET_MARKER_LUA)
        cap_args: list[Any] = [len(policy.capped_channels), *policy.capped_channels]
        for cap in policy.caps:
            cap_args += [cap.channel, cap.max, cap.window_hours * 3600.0]
        self._cap_args = cap_args

    async def ping(self) -> bool:
        return bool(await self.client.ping())  # type: ignore[misc]

    def layout(self, spec: FeatureSpec) -> FeastRedisLayout:
        """Feast's Redis layout of the batch customer views of ``spec`` (built once per spec)."""
        layout = self._layouts.get(spec)
        if layout is None:
            layout = self._layouts[spec] = FeastRedisLayout(spec.raw, project=self.project)
        return layout

    async def read_customer(
        self,
        unit: str,
        now: float,
        features: FeatureSpec | None = None,
        extra: ExtraRead | None = None,
    ) -> CustomerState:
        """One pipelined round trip: ``extra``'s reads, the customer's features of the views of
        ``features`` (none when None: an anonymous unit), contacts in the cap window, purchases."""
        layout = self.layout(features) if features is not None else None
        async with self.client.pipeline(transaction=False) as pipe:
            n_extra = extra.queue(pipe, unit) if extra is not None else 0
            if layout is not None:
                pipe.hmget(layout.key(unit), layout.all_fields)  # type: ignore[arg-type]
            pipe.zrangebyscore(contacts_key(unit), now - self.window_s, "+inf")
            pipe.smembers(purchased_key(unit))
            replies = await pipe.execute()
        extra_state = extra.parse(replies[:n_extra]) if extra is not None else None
        replies = replies[n_extra:]
        stamps: dict[str, float] = {}
        values = None
        if layout is not None:
            values, stamps = layout.decode(replies[0])
            replies = replies[1:]
        contacts = []
        for m in replies[0]:
            ts_s, ch, _ = m.decode().split("|", 2)
            contacts.append((float(ts_s), ch))
        purchased = frozenset(x.decode() for x in replies[1])
        ts = max(stamps.values()) if stamps else None
        return CustomerState(values, ts, contacts, purchased, extra_state, stamps)

    async def read_canary(self, spec: FeatureSpec) -> dict[str, F64] | None:
        """The layout canary's features as this reader decodes them (None: not written)."""
        layout = self.layout(spec)
        key = layout.key(CANARY_ENTITY)
        reply = await self.client.hmget(key, layout.all_fields)  # type: ignore[arg-type,misc]
        values, _ = layout.decode(reply)
        return values

    async def reserve_contact(self, unit: str, channel: str, at: float, decision_id: str) -> int:
        """Record an outbound contact if every cap still holds (atomic). 0 = recorded."""
        member = f"{at:.3f}|{channel}|{decision_id}"
        ttl = int(self.window_s) + 3600
        result = await self._reserve(
            keys=[contacts_key(unit)], args=[at, member, channel, ttl, *self._cap_args]
        )
        return int(result)

    async def append_decision(self, decision_id: str, record: bytes, summary: bytes | None) -> bool:
        """Append once (idempotent by decision id); False if it was already there."""
        marker = summary if summary is not None else b"{}"
        result = await self._decision(
            keys=[decision_key(decision_id), decision_stream(decision_id)],
            args=[marker, self.record_ttl_s, self.log_maxlen, record],
        )
        return bool(result)

    async def get_decision(self, decision_id: str) -> bytes | None:
        """The decision's compact marker (None: unknown or past the feedback window)."""
        out: bytes | None = await self._get_marker(keys=[decision_key(decision_id)])
        return out

    async def append_feedback(
        self, decision_id: str, event: str, payload: bytes
    ) -> tuple[int, bytes | None]:
        """Append an outcome once (idempotent by decision and event).

        Returns (status, the decision's marker): 0 unknown decision (no marker), 1 accepted,
        2 duplicate (already in the log).
        """
        result = await self._feedback(
            keys=[
                decision_key(decision_id),
                feedback_marker_key(decision_id, event),
                feedback_stream(decision_id),
            ],
            args=[self.record_ttl_s, self.log_maxlen, payload, event],
        )
        return int(result[0]), (result[1] if len(result) > 1 else None)

    async def add_purchase(self, unit: str, offer_id: str, decision_id: str) -> bool:
        """The offer joins the unit's purchases: once for the decision's ``converted``
        outcome however often it is applied. True when applied by this call."""
        result = await self._effect(
            keys=[effect_marker_key(unit, decision_id, "converted"), purchased_key(unit)],
            args=[self.record_ttl_s, "purchase", offer_id, PURCHASE_TTL_S],
        )
        return bool(result)

    async def count_contact(self, unit: str, channel: str, at: float, decision_id: str) -> bool:
        """A delivered contact counts against the caps: once for the decision's ``delivered``
        outcome however often it is applied (it happened: no cap can refuse it). True when
        counted by this call."""
        member = f"{at:.3f}|{channel}|{decision_id}"
        result = await self._effect(
            keys=[effect_marker_key(unit, decision_id, "delivered"), contacts_key(unit)],
            args=[self.record_ttl_s, "contact", member, int(self.window_s) + 3600, at],
        )
        return bool(result)

    async def close(self) -> None:
        await self.client.aclose()


def sync_client(url: str, cluster: bool = False, **kwargs: Any) -> Any:
    """A blocking client for the tools (log export, delivery worker).

    ``cluster``: ``url`` names one node of a Redis Cluster; the client follows the slot map, so
    the 16 log shards, the actions stream and the per-action markers are reached wherever they
    live (a plain client there fails with ``MOVED`` on every key of another node).
    """
    import redis

    if cluster:
        return redis.RedisCluster.from_url(url, **kwargs)
    return redis.Redis.from_url(url, **kwargs)


async def with_budget(coro: Any, seconds: float) -> Any:
    return await asyncio.wait_for(coro, timeout=seconds)


def read_log(client: Any, streams: list[str]) -> list[bytes]:
    """Every record of the given streams (a sync redis client), oldest first (by stream id),
    as the raw bytes appended (decode with :mod:`contracts.records`)."""
    rows: list[tuple[bytes, bytes]] = []
    for stream in streams:
        last = b"-"
        while True:
            batch = client.xrange(stream, min=last, max="+", count=10_000)
            if last != b"-":
                batch = batch[1:]
            if not batch:
                break
            for entry_id, fields in batch:
                rows.append((entry_id, fields[b"record"]))
            last = batch[-1][0]

    def key(row: tuple[bytes, bytes]) -> tuple[int, int]:
        ms, seq = row[0].split(b"-")
        return int(ms), int(seq)

    rows.sort(key=key)
    return [r for _, r in rows]


def read_decisions(client: Any) -> list[DecisionRecord]:
    """Every decision record in Redis (all shards merged, oldest first; a sync client)."""
    return [decode_decision(raw) for raw in read_log(client, decision_streams())]


def read_feedback(client: Any) -> list[FeedbackRecord]:
    """Every feedback record in Redis (all shards merged, oldest first; a sync client)."""
    return [decode_feedback(raw) for raw in read_log(client, feedback_streams())]
