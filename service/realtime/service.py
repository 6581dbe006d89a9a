"""The real-time layer around the DecisionEngine: event ingestion and the /decide hook.

* :meth:`Realtime.ingest` applies a batch of events (``POST /events``): idempotent by event
  id, in timestamp order per unit, identity links on ``identify``, feature rows written to
  Feast's layout, purchases into ``nb:{u}:purchased``, sequences started and ended.
* :meth:`Realtime.prepare` runs at the start of every decision (the engine calls it): resolves
  an anonymous id linked to a customer, reads the real-time row and cart, adds the cart's
  offers to the request context (cart categories) and returns what the decision log records.

**Identity and allocation.** Once an anonymous id is linked (``identify``), decisions for it
are made *as the customer*: the customer's features, contacts and purchases (the anonymous
cart, windows, purchases and contacts are merged into the customer's at identify), and the
experiment arm follows the **customer id**. So one person has one arm on every device and
channel after the link, and it never changes again; the price is a one-time switch for an
anonymous visitor whose anonymous-id arm differed (decisions before the link are logged
under the anonymous id, after it under the customer with ``alias`` = the anonymous id, so an
analysis can drop pre-link exposures). Events for a linked anonymous id are applied to the
customer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, get_args

import msgspec

from contracts.features import DEFAULT_SPEC
from service.domain.decision import Offer
from service.realtime.schemas import EventIn, EventResult, EventsRequest, EventsResponse, Status
from service.realtime.sequences import Clock, Scheduler
from service.realtime.state import RealtimeState, RealtimeStore
from service.schemas import DecideRequest

__all__ = ["OptedOut", "Realtime", "RealtimeContext", "build_realtime"]

log = logging.getLogger("nextbest.realtime")
#: customer ids -> those of them who opted out (``opted_out`` = 1 in their profile)
OptedOut = Callable[[list[str]], Awaitable[set[str]]]
#: events further than this in the future (client clock skew) are rejected
MAX_FUTURE_S = 300.0
MAX_CART = 100


@dataclass(frozen=True, slots=True)
class RealtimeContext:
    """What the real-time layer contributes to one decision."""

    boost_categories: frozenset[str] = frozenset()
    log: dict[str, Any] = field(default_factory=dict)
    #: epoch seconds of the unit's last event (None: no real-time row); a cold start sends at
    #: the local hour the customer was last active
    session_ts: float | None = None
    #: every item of the open cart (offers and other items) and the categories known of them
    cart: tuple[str, ...] = ()
    cart_categories: dict[str, str] = field(default_factory=dict)
    #: the unit's responses to messages, (member, time): service/realtime/responses.py
    responses: list[tuple[str, float]] = field(default_factory=list)


class Realtime:
    def __init__(
        self,
        store: RealtimeStore,
        scheduler: Scheduler | None = None,
        clock: Clock = time.time,
        opted_out: OptedOut | None = None,
    ) -> None:
        self.store = store
        self.scheduler = scheduler
        self.clock = clock
        #: which of these customers opted out (their events are skipped, not collected)
        self.opted_out: OptedOut = opted_out or store.opted_out

    # ------------------------------------------------------------- ingestion
    async def ingest(self, req: EventsRequest) -> EventsResponse:
        """Apply a batch. The opt-out flags of the batch's customers are read in one round
        trip first (an anonymous id linked to a customer is looked up when resolved)."""
        now = self.clock()
        order = sorted(range(len(req.events)), key=lambda i: req.events[i].timestamp)
        customers = list(dict.fromkeys(e.customer_id for e in req.events if e.customer_id))
        flagged = await self.opted_out(customers) if customers else set()
        opted = {c: c in flagged for c in customers}
        results: list[EventResult | None] = [None] * len(req.events)
        for i in order:
            ev = req.events[i]
            results[i] = await self._one(ev, now, opted)
        done = [r for r in results if r is not None]
        counts = {s: sum(1 for r in done if r.status == s) for s in get_args(Status)}
        return EventsResponse(
            applied=counts["applied"],
            late=counts["late"],
            duplicate=counts["duplicate"],
            rejected=counts["rejected"],
            skipped=counts["skipped"],
            results=done,
        )

    async def _is_opted_out(self, customer: str, opted: dict[str, bool]) -> bool:
        if customer not in opted:
            opted[customer] = customer in await self.opted_out([customer])
        return opted[customer]

    async def _one(self, ev: EventIn, now: float, opted: dict[str, bool]) -> EventResult:
        def rejected(detail: str) -> EventResult:
            return EventResult(event_id=ev.event_id, status="rejected", detail=detail)

        if ev.timestamp.tzinfo is None:
            return rejected("timestamp must carry a UTC offset")
        ts = ev.timestamp.timestamp()
        if ts > now + MAX_FUTURE_S:
            return rejected("timestamp is in the future")
        if ts < now - self.store.marker_ttl_s:  # a replay could no longer be recognised
            days = self.store.marker_ttl_s / 86400
            return rejected(f"timestamp is older than the {days:g}-day idempotency window")
        if not ev.customer_id and not ev.anonymous_id:
            return rejected("one of customer_id or anonymous_id is required")
        if ev.type in ("cart_add", "cart_remove") and not ev.offer_id:
            return rejected(f"{ev.type} needs offer_id")
        skipped = EventResult(
            event_id=ev.event_id,
            status="skipped",
            detail="the customer opted out: behavioural data is not collected",
        )
        if ev.type == "identify":
            if not (ev.customer_id and ev.anonymous_id):
                return rejected("identify needs customer_id and anonymous_id")
            if await self._is_opted_out(ev.customer_id, opted):
                # linked (later events of the visitor are the customer's, so skipped too);
                # what was collected anonymously is dropped, not merged into the customer
                await self.store.link_only(ev.anonymous_id, ev.customer_id)
                return skipped
            status = await self.store.identify(ev.anonymous_id, ev.customer_id, ev.event_id, ts)
            if status != "duplicate":
                if self.scheduler is not None:
                    # an anonymous cart becomes the customer's: it can start a sequence now
                    rt = await self.store.read(ev.customer_id)
                    feats = rt.features or {}
                    if feats.get("cart_items_rt", 0.0) > 0:
                        await self.scheduler.on_event(
                            ev.customer_id, "cart_add", feats.get("last_cart_add_ts", ts)
                        )
                await self.store.finish(ev.customer_id, ev.event_id)
            return EventResult(event_id=ev.event_id, status=status)  # type: ignore[arg-type]
        known = ev.customer_id
        if known is None and ev.anonymous_id is not None:
            known = await self.store.resolve(ev.anonymous_id)
        if known and await self._is_opted_out(known, opted):
            return skipped
        unit = known or ev.anonymous_id or ""
        # an event that starts or ends sequences is done once they are: if this attempt fails
        # in between (503), the caller's retry completes them instead of meeting "duplicate"
        sequences = bool(known) and self.scheduler is not None and self.scheduler.follows(ev.type)
        res = await self.store.apply(
            unit, ev.event_id, ev.type, ts, ev.offer_id, ev.value, ev.count, sequences,
            ev.category,
        )  # fmt: skip
        if sequences and res.status != "duplicate":
            assert known is not None and self.scheduler is not None
            # a late purchase still ends sequences that started before it; other late events
            # (order-sensitive) do not start one
            if res.status == "applied" or ev.type == "purchase":
                await self.scheduler.on_event(known, ev.type, ts)
            await self.store.finish(unit, ev.event_id)
        return EventResult(event_id=ev.event_id, status=res.status)  # type: ignore[arg-type]

    # ------------------------------------------------------------- decisions
    async def prepare(
        self, req: DecideRequest, offers: Mapping[str, Offer], boost: bool = True
    ) -> tuple[DecideRequest, RealtimeContext]:
        """Resolve identity and read the real-time row; the request the engine should decide."""
        alias = None
        if req.customer_id:
            rt = await self.store.read(req.customer_id)
        else:
            assert req.anonymous_id is not None
            cid, rt = await self.store.read_resolved(req.anonymous_id)
            if cid is not None:
                alias = req.anonymous_id
                req = msgspec.structs.replace(req, customer_id=cid, anonymous_id=None)
        return self.apply(req, offers, rt, alias, boost)

    def apply(
        self,
        req: DecideRequest,
        offers: Mapping[str, Offer],
        rt: RealtimeState,
        alias: str | None = None,
        boost: bool = True,
    ) -> tuple[DecideRequest, RealtimeContext]:
        """The decision's view of a real-time state already read (pure; no I/O).

        The engine reads a known customer's real-time row in the same round trip as the
        rest of the customer's state (``RealtimeStore.queue``/``parse``) and calls this.
        """
        feats = rt.features or {}
        in_cart = [o for o in rt.cart if o in offers and o not in req.context.cart_items]
        if in_cart:
            items = [*req.context.cart_items, *in_cart][:MAX_CART]
            req = msgspec.structs.replace(
                req, context=msgspec.structs.replace(req.context, cart_items=items)
            )
        cats = frozenset(offers[o].category for o in rt.cart if o in offers)
        now = req.now.timestamp() if req.now else self.clock()
        entry: dict[str, Any] = {}
        if alias:
            entry["alias"] = alias
        if rt.features is not None:
            entry.update(
                {
                    "cart_items_rt": feats.get("cart_items_rt"),
                    "cart_value_rt": round(feats.get("cart_value_rt", 0.0), 2),
                    "purchases_1h": feats.get("purchases_1h"),
                    "session_views_1h": feats.get("session_views_1h"),
                    "messages_opened_24h": feats.get("messages_opened_24h"),
                    "cart_categories": sorted(cats),
                    "age_s": round(max(now - (rt.row_ts or now), 0.0), 3),
                }
            )
            for name in ("last_cart_add_ts", "last_purchase_ts"):
                v = feats.get(name, 0.0)
                entry[name.replace("_ts", "_age_s")] = round(now - v, 3) if v > 0 else None
        active = boost and feats.get("cart_items_rt", 0.0) > 0
        last = feats.get("last_event_ts", 0.0)
        return req, RealtimeContext(
            cats if active else frozenset(),
            entry,
            last if last > 0 else None,
            tuple(rt.cart),
            dict(rt.cart_categories),
            list(rt.responses),
        )


def build_realtime(client: Any, engine: Any, settings: Any, clock: Clock = time.time) -> Realtime:
    """The real-time layer for an app: store, scheduler (deciding through ``engine``)."""
    from service.realtime.sequences import load_sequences

    store = RealtimeStore(client, project=settings.features.feast_project)
    reader = engine.state.features  # the Feast SDK when features are not read from Redis

    async def opted_out_sdk(customers: list[str]) -> set[str]:
        spec = engine.models.spec if engine.models is not None else DEFAULT_SPEC
        rows = await asyncio.gather(*(reader.read(c, spec) for c in customers))
        return {
            c
            for c, (values, _) in zip(customers, rows, strict=True)
            if values is not None and float(values["opted_out"][0]) == 1.0
        }

    scheduler = Scheduler(
        client,
        load_sequences(settings.policy.sequences_file),
        store,
        engine.decide,
        engine.policy.experiments,
        clock=clock,
        log_maxlen=settings.redis.log_maxlen,
    )
    return Realtime(store, scheduler, clock, opted_out_sdk if reader is not None else None)
