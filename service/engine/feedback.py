"""Outcomes of decisions: ``POST /feedback`` into the log, and the effects they imply.

An accepted outcome is appended once (idempotent by decision and event). Effects
(``converted``: the offer joins the customer's purchases; ``delivered`` with ``count_on:
delivered``: the contact counts against the caps) are applied after it. When Redis cannot
take either, the outcome (or its pending effects) is made durable in the local spool before
the caller is answered, and replayed when Redis returns.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from contracts.records import FeedbackRecord, decode_marker, encode
from service.adapters.redis_store import RedisStore
from service.adapters.spool import Spool
from service.domain.config import PolicyConfig
from service.engine.guard import RedisGuard, RedisSkipped
from service.errors import UnknownDecision
from service.observability import Metrics
from service.schemas import FeedbackRequest, FeedbackResponse

__all__ = ["EFFECT_EVENTS", "FeedbackHandler"]

log = logging.getLogger("nextbest.engine")

#: outcomes that change later decisions (see FeedbackHandler.apply_effects)
EFFECT_EVENTS = ("converted", "delivered")


class FeedbackHandler:
    def __init__(
        self,
        store: RedisStore,
        guard: RedisGuard,
        spool: Spool,
        metrics: Metrics,
        policy: PolicyConfig,
    ) -> None:
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
        # read before the call: a replay may land the decision (and forget it) meanwhile
        was_spooled = req.decision_id in self.spool.spooled_decisions
        try:
            status = await self.guard.call(
                self.store.append_feedback(req.decision_id, req.event, payload)
            )
        except Exception as exc:
            # Durable locally (fsync'ed) before we answer; replayed idempotently, in order,
            # when Redis returns. The decision id is checked then (unknown ids are dropped
            # and counted as nextbest_feedback_total{status="dropped_unknown"}).
            await asyncio.to_thread(
                self.spool.append, "feedback", req.decision_id, payload, req.event.encode()
            )
            if not isinstance(exc, RedisSkipped):
                log.warning("feedback spooled: %s", type(exc).__name__)
            self.metrics.feedback.labels(event=req.event, status="spooled").inc()
            return FeedbackResponse(decision_id=req.decision_id, event=req.event, status="spooled")
        if status == 0:
            if was_spooled or req.decision_id in self.spool.spooled_decisions:
                # its decision is (or was, when we asked Redis) in the local spool: queue the
                # feedback behind it; the replay sends it once the decision is in Redis
                await asyncio.to_thread(
                    self.spool.append, "feedback", req.decision_id, payload, req.event.encode()
                )
                return FeedbackResponse(
                    decision_id=req.decision_id, event=req.event, status="spooled"
                )
            raise UnknownDecision(req.decision_id)
        result = "accepted" if status == 1 else "duplicate"
        self.metrics.feedback.labels(event=req.event, status=result).inc()
        if status == 1 and req.event in EFFECT_EVENTS:
            try:
                await self.guard.call(self.apply_effects(req.decision_id, req.event, ts))
            except Exception:
                # the outcome is in the log; what it implies (a purchase, a counted contact)
                # is made durable here and applied when Redis is back
                await asyncio.to_thread(
                    self.spool.append, "effects", req.decision_id, payload, req.event.encode()
                )
        return FeedbackResponse(decision_id=req.decision_id, event=req.event, status=result)  # type: ignore[arg-type]

    async def apply_effects(self, decision_id: str, event: str, at: float) -> bool:
        """What an accepted outcome implies for later decisions; idempotent.

        ``converted``: the offer joins the customer's purchases (eligibility excludes it);
        ``delivered`` with ``count_on: delivered``: the contact counts against the caps.
        Returns False when the decision's marker is unknown (expired or never logged).
        """
        raw = await self.store.get_decision(decision_id)
        if raw is None:
            return False
        m = decode_marker(raw)
        if event == "converted" and m.offer and m.known and m.unit:
            await self.store.add_purchase(m.unit, m.offer)
        policy = self.policy.contact_policy
        if (
            event == "delivered"
            and policy.count_on == "delivered"
            and m.unit
            and m.channel in policy.capped_channels
        ):
            await self.store.reserve_contact(m.unit, m.channel, at, decision_id)
        return True
