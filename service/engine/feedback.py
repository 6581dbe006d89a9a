"""Outcomes of decisions: ``POST /feedback`` into the log, and the effects they imply.

An outcome is appended once (idempotent by decision and event). Its effects (``converted``:
the offer joins the customer's purchases; ``delivered`` with ``count_on: delivered``: the
contact counts against the caps; every outcome of an action for a known customer: recorded
in the customer's responses, which the next decision learns from within the second, see
:mod:`service.realtime.responses`) are applied exactly once, by their own marker in the
customer's keys (:meth:`RedisStore.add_purchase`, :meth:`RedisStore.count_contact`), and
every time the outcome is seen, also as a duplicate. So the outcome completes its effects
whichever attempt gets through: the first one, its replay from the spool (which may meet
"duplicate" when a stalled write landed after the service gave up on it), or a retry by
the caller. When Redis cannot take the outcome or its effects, the outcome is made durable
in the local spool before the caller is answered, and replayed when Redis returns.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from contracts.keys import responses_key
from contracts.records import DecisionMarker, FeedbackRecord, decode_marker, encode
from service.adapters.redis_store import RedisStore
from service.adapters.spool import Spool
from service.domain.config import PolicyConfig
from service.domain.decision import Offer
from service.engine.guard import RedisGuard, RedisSkipped
from service.errors import UnknownDecision
from service.observability import Metrics
from service.realtime.responses import MAX_RESPONSES, RESPONSE_EVENTS, member
from service.schemas import FeedbackRequest, FeedbackResponse

__all__ = ["EFFECT_EVENTS", "FeedbackHandler"]

log = logging.getLogger("nextbest.engine")

#: outcomes that change later decisions (see FeedbackHandler.apply_effects)
EFFECT_EVENTS = RESPONSE_EVENTS
#: the catalogue the feedback's offer is looked up in (for its category); the engine's models
Catalogue = Callable[[], Mapping[str, Offer]]


class FeedbackHandler:
    def __init__(
        self,
        store: RedisStore,
        guard: RedisGuard,
        spool: Spool,
        metrics: Metrics,
        policy: PolicyConfig,
        catalogue: Catalogue | None = None,
    ) -> None:
        self.catalogue: Catalogue = catalogue or dict
        self.store = store
        self.guard = guard
        self.spool = spool
        self.metrics = metrics
        self.policy = policy

    async def feedback(self, req: FeedbackRequest) -> FeedbackResponse:
        ts = (req.timestamp or datetime.now(UTC)).timestamp()
        payload = encode(
            FeedbackRecord(decision_id=req.decision_id, event=req.event, value=req.value, ts=ts)
        )
        unknown = False
        try:
            status, marker = await self._append(req, payload)
            if status == 0 and not await asyncio.to_thread(
                self.spool.holds_decision, req.decision_id
            ):
                # not in this host's spool, or no longer: its replay may have put it in Redis
                # since we asked (a replay removes a decision from the spool only after that)
                status, marker = await self._append(req, payload)
                unknown = status == 0
        except Exception as exc:
            # Durable locally (fsync'ed) before we answer; replayed idempotently, in order,
            # when Redis returns. The decision id is checked then (unknown ids are dropped
            # and counted as nextbest_feedback_total{status="dropped_unknown"}).
            if not isinstance(exc, RedisSkipped):
                log.warning("feedback spooled: %s", type(exc).__name__)
            return await self._spooled(req, payload)
        if unknown:
            raise UnknownDecision(req.decision_id)
        if status == 0:
            # its decision waits in this host's spool (acknowledged by any process of the
            # host, before a restart too): queue the feedback behind it; the replay sends
            # it once the decision is in Redis
            return await self._spooled(req, payload)
        result = "accepted" if status == 1 else "duplicate"
        self.metrics.feedback.labels(event=req.event, status=result).inc()
        m = decode_marker(marker) if marker is not None and req.event in EFFECT_EVENTS else None
        if m is not None and self.has_effects(req.event, m):
            # also for a duplicate: the attempt that logged it may have failed before them
            try:
                await self.guard.call(self._apply(req.decision_id, req.event, ts, m))
            except Exception:
                # the outcome is in the log, what it implies not yet: spool the outcome; its
                # replay meets "duplicate" and completes the effects (exactly once)
                await asyncio.to_thread(
                    self.spool.append, "feedback", req.decision_id, payload, req.event.encode()
                )
        return FeedbackResponse(decision_id=req.decision_id, event=req.event, status=result)  # type: ignore[arg-type]

    async def _append(self, req: FeedbackRequest, payload: bytes) -> tuple[int, bytes | None]:
        return await self.guard.call(
            self.store.append_feedback(req.decision_id, req.event, payload)
        )

    async def _spooled(self, req: FeedbackRequest, payload: bytes) -> FeedbackResponse:
        await asyncio.to_thread(
            self.spool.append, "feedback", req.decision_id, payload, req.event.encode()
        )
        self.metrics.feedback.labels(event=req.event, status="spooled").inc()
        return FeedbackResponse(decision_id=req.decision_id, event=req.event, status="spooled")

    def has_effects(self, event: str, m: DecisionMarker) -> bool:
        """Does this outcome of this decision change later decisions? (pure)"""
        if event in RESPONSE_EVENTS and m.offer and m.known and m.unit:
            return True  # a response to learn from (and, converted: a purchase)
        policy = self.policy.contact_policy
        return (
            event == "delivered"
            and policy.count_on == "delivered"
            and bool(m.unit)
            and m.channel in policy.capped_channels
        )

    async def apply_effects(
        self, decision_id: str, event: str, at: float, marker: bytes | None = None
    ) -> bool:
        """What an outcome implies for later decisions, applied exactly once (idempotent).

        ``converted``: the offer joins the customer's purchases (eligibility excludes it);
        ``delivered`` with ``count_on: delivered``: the contact counts against the caps.
        ``marker``: the decision's marker when at hand (else read). Returns False when the
        decision's marker is unknown (expired or never logged).
        """
        if marker is None:
            marker = await self.store.get_decision(decision_id)
            if marker is None:
                return False
        m = decode_marker(marker)
        if self.has_effects(event, m):
            await self._apply(decision_id, event, at, m)
        return True

    async def _apply(self, decision_id: str, event: str, at: float, m: DecisionMarker) -> None:
        assert m.unit is not None
        if event == "converted":
            assert m.offer is not None
            await self.store.add_purchase(m.unit, m.offer, decision_id)
        policy = self.policy.contact_policy
        if (
            event == "delivered"
            and policy.count_on == "delivered"
            and m.channel in policy.capped_channels
        ):
            assert m.channel is not None
            await self.store.count_contact(m.unit, m.channel, at, decision_id)
        if event in RESPONSE_EVENTS and m.offer and m.known:
            await self._record_response(decision_id, event, at, m)

    async def _record_response(
        self, decision_id: str, event: str, at: float, m: DecisionMarker
    ) -> None:
        """The response joins the customer's responses (idempotent: the same outcome is the
        same member); older than the learning window, or beyond the last MAX_RESPONSES, go."""
        assert m.unit is not None and m.offer is not None
        offer = self.catalogue().get(m.offer)
        category = offer.category if offer is not None else ""
        key = responses_key(m.unit)
        window = self.policy.learning.window_days * 86400.0
        async with self.store.client.pipeline(transaction=True) as pipe:
            pipe.zadd(key, {member(event, m.offer, category, m.channel or "", decision_id): at})
            pipe.zremrangebyscore(key, "-inf", at - window)
            pipe.zremrangebyrank(key, 0, -MAX_RESPONSES - 1)
            pipe.expire(key, int(window) + 86400)
            await pipe.execute()
