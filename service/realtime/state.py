"""Real-time state per unit (customer or anonymous id), identity links, and the feature row.

Keys (built by :mod:`contracts.keys`; ``{u}`` is the unit's hash tag, shared with
``nb:{u}:contacts`` / ``nb:{u}:purchased``, so one event is one single-slot Lua call even on a
Redis Cluster):

| key | type | content |
|---|---|---|
| ``nb:{u}:rt`` | hash | ``last_ts`` (last order-sensitive event applied), ``row_us`` (feature row time), ``last_*_ts`` |
| ``nb:{u}:ev:<event_id>`` | string | idempotency marker (TTL ``marker_ttl_s``): ``applied``/``late`` until the event's effects are complete, then ``done`` |
| ``nb:{u}:cart`` | hash | ``q:<item>`` quantity, ``v:<item>`` value and ``c:<item>`` category (when the event named one) of the open cart |
| ``nb:{u}:rt:views`` / ``:purchases`` / ``:opens`` | sorted sets | event ids by time (windows, pruned at 24 h) |
| ``nb:{u}:purchased`` | set | offers bought (also fed by `converted` feedback); excluded from offers |
| ``nb:{a}:customer`` | string | identity link: anonymous id -> customer id |
| ``nb:{c}:anonymous`` | set | identity link: customer id -> anonymous ids |

Ordering (per unit): an event older than the last applied one (``timestamp < last_ts``) is
*late*. Late events still count where order does not matter (page views, opens, purchases in
the windows, the purchased set, ``last_purchase_ts`` as a max) but are **ignored** for the
order-sensitive cart state (a late ``cart_add``/``cart_remove`` does not change the cart and a
late ``purchase`` does not empty it). Equal timestamps apply in arrival order.

Every call returns the unit's feature row, written to Feast's layout by
:class:`service.realtime.features.FeastRowWriter` with a strictly increasing row time.

**Retries.** An event is applied once. What follows it outside this store (its feature row,
the sequences it starts or ends) may fail after the state took it (a 503 to the caller, who
retries the batch): so a retry writes the row again when it is missing, and an event whose
caller has more to do (``pending``) stays ``applied``/``late`` until :meth:`RealtimeStore.
finish`, so that a retry completes those effects instead of meeting ``duplicate``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from contracts.features import PROFILE_VIEW, REALTIME
from contracts.keys import (
    REALTIME_WINDOWS,
    aliases_key,
    cart_key,
    contacts_key,
    event_marker_key,
    link_key,
    purchased_key,
    realtime_state_key,
    realtime_window_key,
    responses_key,
)
from service.adapters.feast_redis import FeastRedisLayout
from service.realtime.features import FeastRowWriter

__all__ = ["ApplyResult", "RealtimeState", "RealtimeStore"]

# KEYS: 1 state, 2 marker, 3 cart, 4 views, 5 purchases, 6 opens, 7 purchased
# ARGV: 1 type, 2 ts (epoch s), 3 offer, 4 value, 5 quantity, 6 event id, 7 marker ttl,
#       8 state ttl, 9 merge payload (JSON, type 'merge' only), 10 '1' when the caller has
#       effects to complete after this script (the marker then holds the status until
#       RealtimeStore.finish marks it 'done'), 11 the item's category ('' = none given)
# Returns {status, row_us, <contracts.features.REALTIME names in order>} (strings). status:
# 'applied' / 'late' (applied now, or before but its effects may not be: the caller
# completes them), 'duplicate' (applied and completed before). Only a fresh event changes
# state; otherwise the row is the stored one (row_us '0' when there is none).
APPLY_LUA = """
local typ = ARGV[1]
local ts = tonumber(ARGV[2])
local st = KEYS[1]
local mark = redis.call('GET', KEYS[2])
local lpt = tonumber(redis.call('HGET', st, 'last_purchase_ts') or '0')
local lca = tonumber(redis.call('HGET', st, 'last_cart_add_ts') or '0')
local lev = tonumber(redis.call('HGET', st, 'last_event_ts') or '0')
local status, asof, row
if mark then
  if mark == 'applied' or mark == 'late' then status = mark else status = 'duplicate' end
  row = tonumber(redis.call('HGET', st, 'row_us') or '0')
  asof = row / 1000000
else
  local last = tonumber(redis.call('HGET', st, 'last_ts') or '-1e18')
  local late = ts < last and typ ~= 'merge'
  local offer, value, qty, eid = ARGV[3], tonumber(ARGV[4]) or 0, tonumber(ARGV[5]) or 1, ARGV[6]
  if ts > lev then lev = ts end
  if typ == 'page_view' then
    redis.call('ZADD', KEYS[4], ts, eid)
  elseif typ == 'message_open' then
    redis.call('ZADD', KEYS[6], ts, eid)
  elseif typ == 'purchase' then
    redis.call('ZADD', KEYS[5], ts, eid)
    if offer ~= '' then
      redis.call('SADD', KEYS[7], offer)
      redis.call('EXPIRE', KEYS[7], 31536000)
    end
    if ts > lpt then lpt = ts end
  elseif typ == 'merge' then
    local m = cjson.decode(ARGV[9])
    for i = 1, #m.cart, 2 do
      local f, amount = m.cart[i], tonumber(m.cart[i + 1])
      if string.sub(f, 1, 2) == 'q:' then
        redis.call('HINCRBY', KEYS[3], f, amount)
      else
        redis.call('HINCRBYFLOAT', KEYS[3], f, amount)
      end
    end
    for i = 1, #m.cats, 2 do redis.call('HSET', KEYS[3], m.cats[i], m.cats[i + 1]) end
    for _, o in ipairs(m.purchased) do redis.call('SADD', KEYS[7], o) end
    if #m.purchased > 0 then redis.call('EXPIRE', KEYS[7], 31536000) end
    local zs = {m.views, m.purchases, m.opens}
    for k = 1, 3 do
      for i = 1, #zs[k], 2 do redis.call('ZADD', KEYS[3 + k], zs[k][i + 1], zs[k][i]) end
    end
    if m.lpt > lpt then lpt = m.lpt end
    if m.lca > lca then lca = m.lca end
    if m.lev > lev then lev = m.lev end
  end
  if not late and typ ~= 'merge' then
    redis.call('HSET', st, 'last_ts', ARGV[2])
    if typ == 'cart_add' then
      redis.call('HINCRBY', KEYS[3], 'q:' .. offer, qty)
      redis.call('HINCRBYFLOAT', KEYS[3], 'v:' .. offer, value)
      if ARGV[11] ~= '' then redis.call('HSET', KEYS[3], 'c:' .. offer, ARGV[11]) end
      lca = ts
    elseif typ == 'cart_remove' then
      local q = tonumber(redis.call('HGET', KEYS[3], 'q:' .. offer) or '0')
      local v = tonumber(redis.call('HGET', KEYS[3], 'v:' .. offer) or '0')
      if q <= qty then
        redis.call('HDEL', KEYS[3], 'q:' .. offer, 'v:' .. offer, 'c:' .. offer)
      else
        redis.call('HSET', KEYS[3], 'q:' .. offer, q - qty,
                   'v:' .. offer, string.format('%.17g', v * (q - qty) / q))
      end
    elseif typ == 'purchase' then
      redis.call('DEL', KEYS[3])
    end
  end
  status = 'applied'
  if late then status = 'late' end
  local done = 'done'
  if ARGV[10] == '1' then done = status end
  redis.call('SET', KEYS[2], done, 'EX', tonumber(ARGV[7]))
  asof = ts
  if last > asof then asof = last end
end
local items, cart_value = 0, 0.0
local cart = redis.call('HGETALL', KEYS[3])
for i = 1, #cart, 2 do
  local kind = string.sub(cart[i], 1, 2)
  if kind == 'q:' then items = items + tonumber(cart[i + 1])
  elseif kind == 'v:' then cart_value = cart_value + tonumber(cart[i + 1]) end
end
local horizon = asof - 86400
if not mark then
  for k = 4, 6 do redis.call('ZREMRANGEBYSCORE', KEYS[k], '-inf', '(' .. horizon) end
end
local views = redis.call('ZCOUNT', KEYS[4], '(' .. (asof - 3600), '+inf')
local purchases = redis.call('ZCOUNT', KEYS[5], '(' .. (asof - 3600), '+inf')
local opens = redis.call('ZCOUNT', KEYS[6], '(' .. horizon, '+inf')
if not mark then
  row = math.floor(asof * 1000000)
  local prev = tonumber(redis.call('HGET', st, 'row_us') or '0')
  if row <= prev then row = prev + 1 end
  redis.call('HSET', st, 'row_us', string.format('%.0f', row),
             'last_purchase_ts', string.format('%.17g', lpt),
             'last_cart_add_ts', string.format('%.17g', lca),
             'last_event_ts', string.format('%.17g', lev))
  local ttl = tonumber(ARGV[8])
  for k = 1, 6 do if k ~= 2 then redis.call('EXPIRE', KEYS[k], ttl) end end
end
return {status, string.format('%.0f', row), tostring(items), string.format('%.17g', cart_value),
        string.format('%.0f', math.floor(lca)), string.format('%.0f', math.floor(lpt)),
        tostring(purchases), tostring(views), tostring(opens), string.format('%.0f', math.floor(lev))}
"""


def _keys(unit: str, event_id: str) -> list[str]:
    return [
        realtime_state_key(unit),
        event_marker_key(unit, event_id),
        cart_key(unit),
        *(realtime_window_key(unit, w) for w in REALTIME_WINDOWS),
        purchased_key(unit),
    ]


@dataclass(frozen=True, slots=True)
class ApplyResult:
    status: str  # applied | late | duplicate
    row_us: int = 0
    features: dict[str, float] = field(default_factory=dict)
    written: bool = False


@dataclass(frozen=True, slots=True)
class RealtimeState:
    """What a decision reads: the feature row (Feast layout) and the cart's offers."""

    features: dict[str, float] | None
    row_ts: float | None
    cart: dict[str, int]
    #: the category of each cart item whose event named one (item id -> category)
    cart_categories: dict[str, str] = field(default_factory=dict)
    #: the unit's responses to messages, (member, time) (service/realtime/responses.py)
    responses: list[tuple[str, float]] = field(default_factory=list)


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


class RealtimeStore:
    def __init__(
        self,
        client: Any,
        project: str = "nextbest",
        marker_ttl_s: int = 7 * 86400,
        state_ttl_s: int = 30 * 86400,
        link_ttl_s: int = 365 * 86400,
    ) -> None:
        self.client = client
        self.writer = FeastRowWriter(client, project)
        self.layout = FeastRedisLayout({REALTIME.name: REALTIME.names}, project=project)
        #: the one profile feature ingestion needs: has the customer opted out?
        self.consent = FeastRedisLayout({PROFILE_VIEW: ("opted_out",)}, project=project)
        self.marker_ttl_s = marker_ttl_s
        self.state_ttl_s = state_ttl_s
        self.link_ttl_s = link_ttl_s
        self._apply = client.register_script(APPLY_LUA)

    async def _run(
        self,
        unit: str,
        event_id: str,
        args: list[Any],
        pending: bool,
        merge: str = "",
        category: str = "",
    ) -> ApplyResult:
        out = await self._apply(
            keys=_keys(unit, event_id),
            args=[
                *args, event_id, self.marker_ttl_s, self.state_ttl_s, merge, int(pending),
                category,
            ],
        )  # fmt: skip
        status = _s(out[0])
        row_us = int(_s(out[1]))
        feats = {n: float(_s(v)) for n, v in zip(REALTIME.names, out[2:], strict=True)}
        # also for an event seen before: the attempt that applied it may have failed before
        # the row was written (Feast's rule skips a row that is there already)
        written = await self.writer.write(unit, feats, row_us) if row_us > 0 else False
        return ApplyResult(status, row_us, feats, written)

    async def apply(
        self,
        unit: str,
        event_id: str,
        type_: str,
        ts: float,
        offer_id: str | None = None,
        value: float | None = None,
        quantity: int = 1,
        pending: bool = False,
        category: str | None = None,
    ) -> ApplyResult:
        """Apply one event (idempotent by event id) and write the unit's feature row.

        ``pending``: the caller has effects to complete after this (sequences to start or
        end): until it calls :meth:`finish`, the event is not done, and a retry gets its
        status again (not ``duplicate``) so that it completes them.
        """
        return await self._run(
            unit,
            event_id,
            [type_, repr(ts), offer_id or "", repr(value or 0.0), quantity],
            pending,
            category=category or "",
        )

    async def finish(self, unit: str, event_id: str) -> None:
        """The event's effects are complete: from now on a retry of it is a duplicate."""
        await self.client.set(event_marker_key(unit, event_id), "done", xx=True, keepttl=True)

    async def opted_out(self, customers: list[str]) -> set[str]:
        """Those of ``customers`` whose profile says ``opted_out`` = 1 (one round trip).

        The profile row is Feast's (another key, in another Cluster slot than the unit's
        real-time keys), so it is read before the events are applied, not inside their
        script; a batch's customers are read together.
        """
        async with self.client.pipeline(transaction=False) as pipe:
            for c in customers:
                pipe.hmget(self.consent.key(c), self.consent.all_fields)
            replies = await pipe.execute()
        out = set()
        for c, reply in zip(customers, replies, strict=True):
            values, _ = self.consent.decode(reply)
            if values is not None and float(values["opted_out"][0]) == 1.0:
                out.add(c)
        return out

    async def link_only(self, anonymous_id: str, customer_id: str) -> None:
        """Link an anonymous id to an opted-out customer without collecting anything: the
        visitor's anonymous cart and windows are dropped, not merged into the customer."""
        a = anonymous_id
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.set(link_key(a), customer_id, ex=self.link_ttl_s)
            pipe.sadd(aliases_key(customer_id), a)
            pipe.expire(aliases_key(customer_id), self.link_ttl_s)
            pipe.delete(
                cart_key(a),
                realtime_state_key(a),
                *(realtime_window_key(a, k) for k in REALTIME_WINDOWS),
            )
            await pipe.execute()

    async def resolve(self, anonymous_id: str) -> str | None:
        cid = await self.client.get(link_key(anonymous_id))
        return _s(cid) if cid is not None else None

    async def identify(self, anonymous_id: str, customer_id: str, event_id: str, ts: float) -> str:
        """Link both ways and merge the anonymous state into the customer's (idempotent).

        Cart, windows, purchases and contacts move to the customer; later events and
        decisions for the anonymous id resolve to the customer. The latest link wins. The
        event is done when the caller calls :meth:`finish` (a retry before that completes
        the move, merging nothing twice).
        """
        a = anonymous_id
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.set(link_key(a), customer_id, ex=self.link_ttl_s)
            pipe.sadd(aliases_key(customer_id), a)
            pipe.expire(aliases_key(customer_id), self.link_ttl_s)
            pipe.hgetall(cart_key(a))
            pipe.smembers(purchased_key(a))
            for k in REALTIME_WINDOWS:
                pipe.zrange(realtime_window_key(a, k), 0, -1, withscores=True)
            pipe.hmget(
                realtime_state_key(a), ["last_purchase_ts", "last_cart_add_ts", "last_event_ts"]
            )
            pipe.zrange(contacts_key(a), 0, -1, withscores=True)
            r = await pipe.execute()
        cart, purchased, views, purchases, opens, stamps, contacts = r[3:]

        def pairs(z: list[tuple[bytes, float]]) -> list[Any]:
            return [x for m, s in z for x in (_s(m), s)]

        numeric = [(f, v) for f, v in cart.items() if not _s(f).startswith("c:")]
        payload = {
            "cart": [_s(f) if i == 0 else float(_s(v)) for f, v in numeric for i in (0, 1)],
            "cats": [x for f, v in cart.items() if _s(f).startswith("c:") for x in (_s(f), _s(v))],
            "purchased": sorted(_s(p) for p in purchased),
            "views": pairs(views),
            "purchases": pairs(purchases),
            "opens": pairs(opens),
            "lpt": float(_s(stamps[0] or b"0")),
            "lca": float(_s(stamps[1] or b"0")),
            "lev": float(_s(stamps[2] or b"0")),
        }
        res = await self._run(
            customer_id, event_id, ["merge", repr(ts), "", "0", 1], True, json.dumps(payload)
        )
        if res.status == "duplicate":
            return res.status
        async with self.client.pipeline(transaction=False) as pipe:
            if contacts:
                pipe.zadd(contacts_key(customer_id), {m: s for m, s in contacts})
                pipe.expire(contacts_key(customer_id), 8 * 86400)
            # the cart and windows moved to the customer: a second identify must not re-add them
            pipe.delete(cart_key(a), *(realtime_window_key(a, k) for k in REALTIME_WINDOWS))
            await pipe.execute()
        return res.status

    async def read(self, unit: str) -> RealtimeState:
        """The unit's real-time feature row (Feast layout) and cart, in one round trip."""
        async with self.client.pipeline(transaction=False) as pipe:
            self.queue(pipe, unit)
            replies = await pipe.execute()
        return self.parse(replies)

    def queue(self, pipe: Any, unit: str) -> int:
        """Queue the reads of :meth:`read` on ``pipe`` (the decision's one round trip)."""
        pipe.hmget(self.layout.key(unit), self.layout.all_fields)
        pipe.hgetall(cart_key(unit))
        pipe.zrange(responses_key(unit), 0, -1, withscores=True)
        return 3

    def parse(self, replies: list[Any]) -> RealtimeState:
        row, cart, responses = replies
        values, stamps = self.layout.decode(row)
        ts = max(stamps.values()) if stamps else None
        feats = {k: float(v[0]) for k, v in values.items()} if values is not None else None
        items = {_s(f)[2:]: int(float(_s(v))) for f, v in cart.items() if _s(f).startswith("q:")}
        cats = {_s(f)[2:]: _s(v) for f, v in cart.items() if _s(f).startswith("c:")}
        return RealtimeState(
            feats,
            ts,
            items,
            {i: c for i, c in cats.items() if i in items},
            [(_s(m), float(t)) for m, t in responses],
        )

    async def read_resolved(self, anonymous_id: str) -> tuple[str | None, RealtimeState]:
        """(linked customer id or None, state of the id decisions should use)."""
        cid = await self.resolve(anonymous_id)
        return cid, await self.read(cid or anonymous_id)
