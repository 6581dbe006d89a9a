"""Shaping a decided context into the /decide response (pure)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from service.domain.config import PolicyConfig
from service.domain.decision import Choice
from service.engine.context import DecideContext
from service.schemas import ActionOut, DecideResponse, ReminderOut, SuppressedOut

__all__ = ["decide_response", "iso_time"]


def iso_time(ts: float, tz_offset: float | None, tz_name: str | None) -> str:
    """ISO 8601 in the customer's zone (IANA name if given, else the UTC offset)."""
    if tz_name:
        return datetime.fromtimestamp(ts, ZoneInfo(tz_name)).isoformat(timespec="seconds")
    tz = timezone(timedelta(hours=tz_offset or 0.0))
    return datetime.fromtimestamp(ts, tz).isoformat(timespec="seconds")


def decide_response(ctx: DecideContext, policy: PolicyConfig) -> DecideResponse:
    d = ctx.decision
    assert d is not None
    req, state, allocation = ctx.req, ctx.state, ctx.allocation
    feats = state.features if state else None
    tz = float(feats["tz_offset"][0]) if feats is not None and "tz_offset" in feats else None
    tz = None if tz is not None and tz != tz else tz
    realtime = policy.placements[req.context.placement].realtime

    def out(c: Choice) -> ActionOut:
        return ActionOut(
            offer_id=c.offer.offer_id,
            offer_name=c.offer.name,
            channel=c.channel,
            send_at=iso_time(c.send_at, tz, req.context.timezone),
            send_now=realtime,
            expected_value=round(c.expected_value, 6),
            probability=round(c.probability, 6),
            propensity=round(c.propensity, 6),
            channel_score=round(c.channel_score, 6),
            hour_lift=round(c.hour_lift, 4),
        )

    age = None
    if state is not None and state.feature_ts is not None:
        now = req.now.timestamp() if req.now else time.time()
        age = round(max(now - state.feature_ts, 0.0), 3)
    explain: dict[str, object] | None = None
    if req.explain:
        explain = {
            "channel_scores": d.channel_scores,
            "hour_scores": d.hour_scores,
            "would_have": out(d.would_have) if d.would_have else None,
            "bucket": allocation.bucket,
            "caller_allocated": allocation.caller_allocated,
            # what the real-time layer saw (cart, recent events, identity link)
            "realtime": ctx.realtime,
        }
    return DecideResponse(
        decision_id=ctx.decision_id,
        action=out(d.action) if d.action else None,
        alternatives=[out(c) for c in d.alternatives],
        suppressed=[SuppressedOut(s.reason, s.offer_id, s.channel, s.detail) for s in d.suppressed],
        experiment=allocation.experiment,
        arm=allocation.arm,
        holdout=allocation.holdout,
        policy=d.policy,
        choice_probability=d.choice_probability,
        cold_start=d.cold_start,
        degraded=d.degraded,
        model_versions=ctx.models.versions if ctx.models else {},
        policy_version=policy.version,
        feature_age_seconds=age,
        explain=explain,
        reminder=_reminder(ctx),
    )


def _reminder(ctx: DecideContext) -> ReminderOut | None:
    a = ctx.decision.action if ctx.decision is not None else None
    if a is None or ctx.reminders is None or a.offer.offer_id not in ctx.reminders:
        return None
    r = ctx.reminders[a.offer.offer_id]
    return ReminderOut(kind=r.kind, item_id=r.item_id, category=r.category)  # type: ignore[arg-type]
