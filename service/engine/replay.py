"""Replaying the local spool into Redis once it answers again (decisions first, then outcomes)."""

from __future__ import annotations

import asyncio
import logging

from contracts.records import decode_feedback
from service.background import sleep_or_stop
from service.engine.core import DecisionEngine
from service.engine.feedback import EFFECT_EVENTS

__all__ = ["replay_loop", "replay_once"]

log = logging.getLogger("nextbest.engine")


async def replay_once(engine: DecisionEngine) -> int:
    """Send every spooled record; returns how many went through."""
    store = engine.store

    async def send(kind: str, id_: str, payload: bytes, extra: bytes | None) -> bool:
        if kind == "decision":
            await store.append_decision(id_, payload, extra)  # idempotent by decision id
            return True
        # an outcome ("effects": one the log took before its effects failed, as spooled by
        # earlier versions): appended once, its effects completed once, whichever attempt
        # got through before (a stalled write may have landed after the service gave up)
        event = (extra or b"").decode()
        status, marker = await store.append_feedback(id_, event, payload)  # idempotent
        if status == 0:
            return False  # no such decision (yet)
        if event in EFFECT_EVENTS:
            await engine.outcomes.apply_effects(id_, event, decode_feedback(payload).ts, marker)
        return True

    result = await engine.spool.replay(send)
    if result.dropped:  # accepted while Redis was down, but their decision never appeared
        engine.metrics.feedback.labels(event="any", status="dropped_unknown").inc(result.dropped)
        log.warning("dropped %d spooled feedback records for unknown decisions", result.dropped)
    return result.sent


async def replay_loop(
    engine: DecisionEngine, stop: asyncio.Event | None = None, every_s: float = 1.0
) -> None:
    """Replay the spool and close the breaker as soon as Redis answers again."""
    while not await sleep_or_stop(stop, every_s):
        try:
            if engine.spool.has_pending() or engine.breaker.is_open:
                await asyncio.wait_for(engine.store.ping(), max(engine.timeout * 4, 0.1))
                engine.breaker.success()
                n = await replay_once(engine)
                if n:
                    log.info("replayed %d spooled log records", n)
        except Exception as exc:
            log.debug("spool replay deferred: %s", type(exc).__name__)
