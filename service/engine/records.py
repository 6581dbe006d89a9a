"""Shaping a decided context into its log record and its feedback marker (pure)."""

from __future__ import annotations

from contracts.records import ChoiceRecord, DecisionMarker, DecisionRecord
from service.domain.config import PolicyConfig
from service.domain.decision import Choice
from service.engine.context import DecideContext

__all__ = ["choice_record", "decision_marker", "decision_record"]


def choice_record(c: Choice) -> ChoiceRecord:
    return ChoiceRecord(
        offer=c.offer.offer_id,
        channel=c.channel,
        send_at=c.send_at,
        local_hour=c.local_hour,
        p=round(c.probability, 6),
        ev=round(c.expected_value, 6),
        propensity=round(c.propensity, 6),
        channel_score=round(c.channel_score, 6),
        hour_lift=round(c.hour_lift, 4),
    )


def decision_record(ctx: DecideContext, policy: PolicyConfig) -> DecisionRecord:
    d = ctx.decision
    assert d is not None
    req = ctx.req
    if d.opted_out:  # the fact of the call, nothing about the person
        return DecisionRecord(
            decision_id=ctx.decision_id,
            ts=ctx.now,
            opted_out=True,
            placement=req.context.placement,
            policy_version=policy.version,
        )
    return DecisionRecord(
        decision_id=ctx.decision_id,
        ts=ctx.now,
        unit=ctx.unit,
        known=ctx.known,
        placement=req.context.placement,
        trigger=req.context.trigger,
        experiment=req.experiment.name if req.experiment else policy.experiments.default,
        arm=ctx.allocation.arm,
        holdout=d.would_have is not None or ctx.allocation.arm == "holdout",
        policy=d.policy,
        choice_probability=d.choice_probability,
        action=choice_record(d.action) if d.action else None,
        would_have=choice_record(d.would_have) if d.would_have else None,
        alternatives=[choice_record(c) for c in d.alternatives],
        suppressed=[(s.reason, s.offer_id, s.channel) for s in d.suppressed],
        cold_start=d.cold_start,
        degraded=list(d.degraded),
        model_versions=ctx.models.versions if ctx.models else {},
        policy_version=policy.version,
        realtime=ctx.realtime,
    )


def decision_marker(ctx: DecideContext) -> DecisionMarker | None:
    """What feedback needs of the decision (None for an opted-out customer)."""
    d = ctx.decision
    assert d is not None
    if d.opted_out:
        return None
    return DecisionMarker(
        unit=ctx.unit,
        known=ctx.known,
        arm=ctx.allocation.arm,
        offer=d.action.offer.offer_id if d.action else None,
        channel=d.action.channel if d.action else None,
        ts=ctx.now,
    )
