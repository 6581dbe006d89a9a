"""Shaping a decided context into its log record and its feedback marker (pure)."""

from __future__ import annotations

from contracts.records import (
    CandidatesRecord,
    ChoiceRecord,
    DecisionMarker,
    DecisionRecord,
    ExplorationRecord,
)
from service.domain.config import PolicyConfig
from service.domain.decision import Choice, Scores
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


def _round(values: object, digits: int = 6) -> list[float]:
    return [float(f"{v:.{digits}g}") for v in values]  # type: ignore[attr-defined]


def candidates_record(s: Scores) -> CandidatesRecord:
    return CandidatesRecord(
        offers=[o.offer_id for o in s.offers],
        channels=list(s.channels),
        p_channel=_round(s.p_channel),
        hour_lift=_round(s.hour_lift, 5),
        p_convert=[_round(row) for row in s.p_convert],
        value=_round(s.value),
        hours={c: [h for _, h in s.slots[c]] for c in s.channels},
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
        model_versions={k: v for k, (_, v) in ctx.models.registered_versions.items()}
        if ctx.models
        else {},
        policy_version=policy.version,
        realtime=ctx.realtime,
        allocation="caller" if ctx.allocation.caller_allocated else "hashed",
        candidates=(
            candidates_record(d.scores) if d.scores is not None and policy.log.candidates else None
        ),
        exploration=(
            ExplorationRecord(
                epsilon=round(d.exploration.epsilon, 6),
                cost=round(d.exploration.cost, 6),
                actions=d.exploration.actions,
            )
            if d.exploration is not None
            else None
        ),
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
