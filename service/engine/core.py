"""The decision engine: request -> state read -> pure decision -> log, within a budget.

This is the service layer between the HTTP controllers and the pure domain. It validates what
types cannot (ids, placement, catalogue), reads the customer's state in one Redis round trip
(:mod:`service.engine.state`), calls :func:`service.domain.decision.decide`, reserves the
contact atomically, appends the decision record (:mod:`service.engine.records`) and shapes the
response (:mod:`service.engine.response`); one :class:`DecideContext` carries the request
through these stages. Outcomes go through :mod:`service.engine.feedback`.

When Redis is slow or down it degrades: features fall back to population priors, channels
whose caps cannot be checked are not used, and log writes go to the local spool (replayed in
order when Redis returns, :mod:`service.engine.replay`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from contracts.features import DEFAULT_SPEC, ENGAGEMENT_VIEW
from contracts.records import encode, encode_marker
from service.adapters.breaker import Breaker
from service.adapters.models import ModelSet
from service.adapters.redis_store import RedisStore
from service.adapters.spool import Spool
from service.domain.allocation import AllocationError, allocate
from service.domain.config import PolicyConfig
from service.domain.decision import Decision, DecisionInput, Suppression, decide
from service.engine.context import DecideContext
from service.engine.feedback import FeedbackHandler
from service.engine.guard import RedisGuard, RedisSkipped
from service.engine.records import decision_marker, decision_record
from service.engine.response import decide_response
from service.engine.state import FeatureReader, StateReader
from service.errors import RequestError
from service.observability import DECISION_ID, Metrics
from service.realtime.reminders import cart_reminders
from service.realtime.responses import NO_RESPONSES
from service.realtime.responses import summarize as summarize_responses
from service.schemas import (
    NOW_YEARS,
    TIMEZONES,
    DecideRequest,
    DecideResponse,
    FeedbackRequest,
    FeedbackResponse,
)

if TYPE_CHECKING:
    from service.realtime.service import Realtime, RealtimeContext

__all__ = ["DecisionEngine", "new_decision_id"]

log = logging.getLogger("nextbest.engine")


def new_decision_id(now: float) -> str:
    return f"{int(now * 1000):012x}{secrets.token_hex(8)}"


def _uniform(decision_id: str) -> float:
    h = hashlib.blake2b(decision_id.encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


def _cold_start_reason(ctx: DecideContext, features: object) -> str:
    if ctx.models is None:
        return "no_models"
    if not ctx.known:
        return "anonymous"
    if ctx.state is None or "features_unavailable" in ctx.degraded:
        return "unavailable"
    return "no_features" if features is None else "little_history"


class DecisionEngine:
    def __init__(
        self,
        models: ModelSet | None,
        policy: PolicyConfig,
        store: RedisStore,
        spool: Spool,
        metrics: Metrics,
        redis_timeout_s: float,
        breaker: Breaker | None = None,
        features: FeatureReader | None = None,
        feature_timeout_s: float = 0.1,
    ) -> None:
        self.models = models
        self.policy = policy
        self.store = store
        self.spool = spool
        self.metrics = metrics
        self.guard = RedisGuard(redis_timeout_s, breaker)
        self.state = StateReader(store, self.guard, features, feature_timeout_s)
        self.outcomes = FeedbackHandler(
            store,
            self.guard,
            spool,
            metrics,
            policy,
            lambda: self.models.offers if self.models else {},
        )
        #: the real-time layer (service/realtime): identity, real-time features; optional
        self.realtime: Realtime | None = None
        #: called with (decision id, arm, stage seconds) after each decision (tracing); None: off
        self.on_decision: Callable[[str, str, dict[str, float]], None] | None = None

    @property
    def breaker(self) -> Breaker:
        return self.guard.breaker

    @property
    def timeout(self) -> float:
        return self.guard.timeout

    # ---------------------------------------------------------------- decide
    def _validate(self, req: DecideRequest, models: ModelSet | None) -> None:
        """What the types cannot check; raises :class:`RequestError` (422) naming the field.

        Everything a decision can be refused for is checked here, before any state is read
        or written, so a refused request (or batch) leaves nothing behind.
        """
        if not req.customer_id and not req.anonymous_id:
            raise RequestError("customer_id", "one of customer_id or anonymous_id is required")
        if req.context.placement not in self.policy.placements:
            raise RequestError(
                "context.placement",
                f"unknown placement {req.context.placement!r}; "
                f"configured: {sorted(self.policy.placements)}",
            )
        if req.context.timezone is not None and req.context.timezone not in TIMEZONES:
            raise RequestError(
                "context.timezone",
                f"unknown time zone {req.context.timezone!r}: an IANA name such as Europe/Berlin",
            )
        if req.now is not None:
            if req.now.tzinfo is None:
                raise RequestError("now", "now must carry a UTC offset (e.g. 2026-11-16T09:00:00Z)")
            if not NOW_YEARS[0] <= req.now.year <= NOW_YEARS[1]:
                raise RequestError(
                    "now", f"now must be in the years {NOW_YEARS[0]} to {NOW_YEARS[1]}"
                )
        spec = models.spec if models else DEFAULT_SPEC
        for i, ch in enumerate(req.channels or ()):
            if ch not in spec.channel_index:
                raise RequestError(
                    f"channels[{i}]", f"unknown channel {ch!r}; channels: {list(spec.channels)}"
                )
        offers = models.offers if models else {}
        if req.candidates is not None:
            if len(set(req.candidates)) != len(req.candidates):
                raise RequestError("candidates", "candidates contain duplicates")
            unknown = [c for c in req.candidates if c not in offers]
            if unknown:
                raise RequestError("candidates", f"unknown offer ids: {unknown[:5]}")
        exp = req.experiment
        if exp is not None:  # the arm a unit gets depends on the unit; whether it exists not
            try:
                allocate(self.policy.experiments, "", exp.name, exp.arm)
            except AllocationError as exc:
                raise RequestError(exc.field, str(exc)) from exc

    async def decide(self, req: DecideRequest) -> DecideResponse:
        models = self.models  # one model set for the whole request, even if a swap happens
        self._validate(req, models)
        return await self._decide(req, models)

    async def decide_batch(self, reqs: Sequence[DecideRequest]) -> list[DecideResponse]:
        """All or nothing: every request is validated before the first is decided, so a
        refused batch (422 naming ``requests[i]``) decides, logs and reserves nothing."""
        models = self.models
        for i, r in enumerate(reqs):
            try:
                self._validate(r, models)
            except RequestError as exc:
                raise RequestError(f"requests[{i}].{exc.field}", exc.message, exc.status) from exc
        return [await self._decide(r, models) for r in reqs]

    async def _decide(self, req: DecideRequest, models: ModelSet | None) -> DecideResponse:
        t0 = time.perf_counter()
        offers = models.offers if models else {}
        degraded: list[str] = []
        rt: RealtimeContext | None = None
        # A known customer's real-time row rides in the state read below (one round trip);
        # an anonymous id is resolved first (it may be linked to a customer).
        rt_joint = self.realtime is not None and bool(req.customer_id)
        if self.realtime is not None and not rt_joint:
            try:
                req, rt = await self.guard.call(self.realtime.prepare(req, offers))
            except Exception as exc:
                degraded.append("realtime_unavailable")
                if not isinstance(exc, RedisSkipped):
                    log.warning("real-time read failed: %s", type(exc).__name__)
        now = (req.now or datetime.now(UTC)).timestamp()
        unit = req.customer_id or req.anonymous_id or ""
        exp = req.experiment
        try:
            allocation = allocate(
                self.policy.experiments, unit, exp.name if exp else None, exp.arm if exp else None
            )
        except AllocationError as exc:
            raise RequestError(exc.field, str(exc)) from exc
        decision_id = new_decision_id(now)
        DECISION_ID.set(decision_id)  # for the request's log lines
        ctx = DecideContext(
            req=req,
            models=models,
            spec=models.spec if models else DEFAULT_SPEC,
            decision_id=decision_id,
            unit=unit,
            known=bool(req.customer_id),
            now=now,
            allocation=allocation,
            degraded=degraded,
            rt=rt,
        )
        rt_store = self.realtime.store if self.realtime is not None and rt_joint else None
        ctx.state = await self.state.read(
            unit, ctx.known, now, ctx.spec, ctx.degraded, extra=rt_store
        )
        if self.realtime is not None and ctx.state is not None and rt_joint:
            try:
                ctx.req, ctx.rt = self.realtime.apply(ctx.req, offers, ctx.state.extra)
            except Exception as exc:
                ctx.degraded.append("realtime_unavailable")
                log.warning("real-time state failed: %s", type(exc).__name__)
        t_read = time.perf_counter()
        ctx.decision = self._decision(ctx)
        t_decide = time.perf_counter()
        await self._commit(ctx)
        t_commit = time.perf_counter()
        resp = decide_response(ctx, self.policy)
        d = ctx.decision
        policy_s = max(t_decide - t_read - d.matrices_s - d.scoring_s, 0.0)
        stages = {
            "read": t_read - t0,
            "matrices": d.matrices_s,
            "scoring": d.scoring_s,
            "policy": policy_s,
            "commit": t_commit - t_decide,
        }
        self.metrics.observe_decision(
            resp.arm,
            d.action.channel if d.action else "none",
            [s.reason for s in d.suppressed],
            bool(resp.degraded),
            stages,
        )
        if self.on_decision is not None:
            self.on_decision(decision_id, resp.arm, stages)
        return resp

    def _decision(self, ctx: DecideContext) -> Decision:
        """The pure decision on what was read (population priors when features are missing)."""
        models, req, state = ctx.models, ctx.req, ctx.state
        if models is None:
            ctx.degraded.append("models_unavailable")
        offers = models.offers if models else {}
        names = req.candidates if req.candidates is not None else list(offers)
        if req.context.remind == "cart":
            # only what was left in the cart (or its category): never something else
            ctx.reminders = cart_reminders(
                [*req.context.cart_items, *ctx.cart], ctx.cart_categories, offers
            )
            names = [n for n in names if n in ctx.reminders]
        features = state.features if state else None
        learning = self.policy.learning
        # most customers have no responses: nothing to summarize (the same value, pre-built)
        learned = (
            summarize_responses(
                ctx.responses,
                ctx.now,
                learning.dismiss_cooldown_hours * 3600.0,
                state.feature_stamps.get(ENGAGEMENT_VIEW) if state else None,
            )
            if ctx.responses
            else NO_RESPONSES
        )
        if ctx.responses and ctx.realtime is not None:
            ctx.realtime["responses"] = learned.as_log(ctx.now)
        inp = DecisionInput(
            unit_id=ctx.unit,
            known=ctx.known,
            features=features,
            now=ctx.now,
            placement=req.context.placement,
            channels=req.channels,
            candidates=[offers[n] for n in names],
            allocation=ctx.allocation,
            contact_history=state.contacts if state else None,
            purchased=state.purchased if state else frozenset(),
            cart_categories=frozenset(
                offers[c].category for c in req.context.cart_items if c in offers
            ),
            tz_name=req.context.timezone,
            uniform=_uniform(ctx.decision_id),
            boost_categories=ctx.boost,
            session_ts=ctx.session_ts,
            dismissed=learned.dismissed,
            responded_categories=learned.categories,
            channel_responses=learned.channels,
        )
        if models is not None:
            scorer = models if features is not None else None
            decision = decide(inp, self.policy, scorer, models.priors, ctx.spec)
        else:
            decision = Decision(action=None, cold_start=True)
        if ctx.reminders is not None and not names:
            decision.suppressed.append(
                Suppression("ineligible", detail="remind: cart: nothing in the cart to remind of")
            )
        decision.degraded[:0] = ctx.degraded
        if decision.cold_start and not decision.opted_out:
            self.metrics.cold_start.labels(reason=_cold_start_reason(ctx, features)).inc()
        return decision

    async def _commit(self, ctx: DecideContext) -> None:
        """Reserve the contact (atomic cap check) and append the decision record."""
        d = ctx.decision
        assert d is not None
        a = d.action
        policy = self.policy.contact_policy
        if a is not None and a.channel in policy.capped_channels and policy.count_on == "decision":
            try:
                blocked = await self.guard.call(
                    self.store.reserve_contact(ctx.unit, a.channel, ctx.now, ctx.decision_id)
                )
            except Exception:
                blocked = -1
            if blocked < 0 and policy.caps_unavailable == "allow":
                d.degraded.append("contact_not_counted")  # configured to send unchecked
            elif blocked != 0:
                # a concurrent decision took the last slot (or caps cannot be checked)
                detail = "cap reached concurrently" if blocked > 0 else "caps could not be checked"
                d.suppressed.append(
                    Suppression("frequency_cap", a.offer.offer_id, a.channel, detail)
                )
                if blocked < 0:
                    d.degraded.append("contact_reservation_failed")
                d.action = None
        record = encode(decision_record(ctx, self.policy))
        marker = decision_marker(ctx)
        summary = encode_marker(marker) if marker is not None else None
        try:
            await self.guard.call(self.store.append_decision(ctx.decision_id, record, summary))
        except Exception:
            # durable before we answer: fsync'ed locally, replayed in order when Redis returns
            await asyncio.to_thread(self.spool.append, "decision", ctx.decision_id, record, summary)
            d.degraded.append("log_spooled")

    # -------------------------------------------------------------- feedback
    async def feedback(self, req: FeedbackRequest) -> FeedbackResponse:
        return await self.outcomes.feedback(req)
