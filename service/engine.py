"""The decision engine: request -> state read -> pure decision -> log, within a budget.

This is the service layer between the HTTP controllers and the pure domain: it validates
what types cannot (ids, placement, catalogue), reads the customer's state in one Redis round
trip, calls :func:`service.domain.decision.decide`, reserves the contact atomically, appends
the decision log and shapes the response. When Redis is slow or down it degrades: features
fall back to population priors, channels whose caps cannot be checked are not used, and log
writes go to the local spool (replayed in order when Redis returns).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from service.adapters.breaker import Breaker
from service.adapters.models import ModelSet
from service.adapters.redis_store import CustomerState, RedisStore
from service.adapters.spool import Spool
from service.domain.allocation import AllocationError, allocate
from service.domain.config import PolicyConfig
from service.domain.decision import Choice, Decision, DecisionInput, Suppression, decide
from service.observability import Metrics
from service.schemas import (
    ActionOut,
    DecideRequest,
    DecideResponse,
    FeedbackRequest,
    FeedbackResponse,
    SuppressedOut,
)

if TYPE_CHECKING:
    from service.realtime.service import Realtime

__all__ = ["DecisionEngine", "RequestError", "UnknownDecision"]

log = logging.getLogger("nextbest.engine")
_json = msgspec.json.Encoder()
_decode_summary = msgspec.json.Decoder(dict[str, Any])
T = TypeVar("T")


class FeatureReader(Protocol):
    """Online features of one customer: (name -> length-1 array, newest timestamp)."""

    async def read(self, customer_id: str) -> tuple[dict[str, Any] | None, float | None]: ...


class RequestError(Exception):
    """A request the types accepted but the service cannot honour (HTTP 422)."""

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.status = status


class UnknownDecision(Exception):
    pass


#: outcomes that change later decisions (see DecisionEngine.apply_feedback_effects)
EFFECT_EVENTS = ("converted", "delivered")


class RedisSkipped(Exception):
    """The breaker is open: Redis was not tried (it failed moments ago)."""


def new_decision_id(now: float) -> str:
    return f"{int(now * 1000):012x}{secrets.token_hex(8)}"


def _uniform(decision_id: str) -> float:
    h = hashlib.blake2b(decision_id.encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


def _iso(ts: float, tz_offset: float | None, tz_name: str | None) -> str:
    if tz_name:
        return datetime.fromtimestamp(ts, ZoneInfo(tz_name)).isoformat(timespec="seconds")
    tz = timezone(timedelta(hours=tz_offset or 0.0))
    return datetime.fromtimestamp(ts, tz).isoformat(timespec="seconds")


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
        self.timeout = redis_timeout_s
        #: open while Redis is known to be down: calls skip it and take the fallback at once
        self.breaker = breaker or Breaker()
        #: None: features ride in the Redis state read (Feast's layout); else read through
        #: this (the Feast SDK, any online store), concurrently, within feature_timeout_s
        self.features = features
        self.feature_timeout = feature_timeout_s
        #: the real-time layer (service/realtime): identity, real-time features; optional
        self.realtime: Realtime | None = None

    # ---------------------------------------------------------------- decide
    def _validate(self, req: DecideRequest, models: ModelSet | None) -> None:
        if not req.customer_id and not req.anonymous_id:
            raise RequestError("customer_id", "one of customer_id or anonymous_id is required")
        if req.context.placement not in self.policy.placements:
            raise RequestError(
                "context.placement",
                f"unknown placement {req.context.placement!r}; "
                f"configured: {sorted(self.policy.placements)}",
            )
        if req.context.timezone:
            try:
                ZoneInfo(req.context.timezone)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise RequestError(
                    "context.timezone", f"unknown time zone {req.context.timezone!r}"
                ) from exc
        if req.now is not None and req.now.tzinfo is None:
            raise RequestError("now", "now must carry a UTC offset (e.g. 2026-11-16T09:00:00Z)")
        offers = models.offers if models else {}
        if req.candidates is not None:
            if len(set(req.candidates)) != len(req.candidates):
                raise RequestError("candidates", "candidates contain duplicates")
            unknown = [c for c in req.candidates if c not in offers]
            if unknown:
                raise RequestError("candidates", f"unknown offer ids: {unknown[:5]}")

    async def _redis(self, call: Awaitable[T]) -> T:
        """Run one Redis call within the budget; feed the breaker. Raises when skipped/failed."""
        if not self.breaker.allow():
            if asyncio.iscoroutine(call):
                call.close()  # never awaited: skip it without a "never awaited" warning
            raise RedisSkipped
        try:
            result = await asyncio.wait_for(call, self.timeout)
        except Exception:  # timeout, connection refused, reset, ...
            self.breaker.failure()
            raise
        self.breaker.success()
        return result

    async def _read_state(
        self, unit: str, known: bool, now: float, degraded: list[str], extra: Any = None
    ) -> CustomerState | None:
        if self.features is not None and known:
            return await self._read_state_sdk(unit, now, degraded, extra)
        return await self._redis_state(unit, now, degraded, extra, with_features=known)

    async def _read_state_sdk(
        self, unit: str, now: float, degraded: list[str], extra: Any
    ) -> CustomerState | None:
        """Redis state (contacts, purchases, real-time row) and SDK features, concurrently."""
        assert self.features is not None
        sdk = asyncio.wait_for(self.features.read(unit), self.feature_timeout)
        redis_state = self._redis_state(unit, now, degraded, extra)
        got_state, feats = await asyncio.gather(redis_state, sdk, return_exceptions=True)
        if not isinstance(got_state, CustomerState):  # Redis failed: the usual fallback
            return None
        if isinstance(feats, BaseException):
            degraded.append("features_unavailable")
            log.warning("feature read failed: %s", type(feats).__name__)
            return got_state
        values, ts = feats
        return dataclasses.replace(got_state, features=values, feature_ts=ts)

    async def _redis_state(
        self, unit: str, now: float, degraded: list[str], extra: Any, with_features: bool = False
    ) -> CustomerState | None:
        """The one pipelined state read; None (flagged degraded) when Redis is skipped/fails."""
        try:
            return await self._redis(
                self.store.read_customer(unit, now, with_features=with_features, extra=extra)
            )
        except Exception as exc:  # skipped (breaker open), timeout, connection refused, ...
            if extra is not None:
                degraded.append("realtime_unavailable")
            degraded.append("redis_unavailable")
            if not isinstance(exc, RedisSkipped):
                log.warning("state read failed: %s", type(exc).__name__)
            return None

    async def decide(self, req: DecideRequest) -> DecideResponse:
        t0 = time.perf_counter()
        models = self.models  # one model set for the whole request, even if a swap happens
        self._validate(req, models)
        degraded: list[str] = []
        boost: frozenset[str] = frozenset()
        rt_log: dict[str, Any] | None = None
        # A known customer's real-time row rides in the state read below (one round trip);
        # an anonymous id is resolved first (it may be linked to a customer).
        rt_joint = self.realtime is not None and bool(req.customer_id)
        if self.realtime is not None and not rt_joint:
            try:
                req, rt = await self._redis(
                    self.realtime.prepare(req, models.offers if models else {})
                )
                boost, rt_log = rt.boost_categories, rt.log
            except Exception as exc:
                degraded.append("realtime_unavailable")
                if not isinstance(exc, RedisSkipped):
                    log.warning("real-time read failed: %s", type(exc).__name__)
        now_dt = req.now or datetime.now(UTC)
        now = now_dt.timestamp()
        known = bool(req.customer_id)
        unit = req.customer_id or req.anonymous_id or ""
        exp = req.experiment
        try:
            allocation = allocate(
                self.policy.experiments, unit, exp.name if exp else None, exp.arm if exp else None
            )
        except AllocationError as exc:
            raise RequestError(exc.field, str(exc)) from exc
        decision_id = new_decision_id(now)
        rt_store = self.realtime.store if self.realtime is not None and rt_joint else None
        state = await self._read_state(unit, known, now, degraded, rt_store)
        if self.realtime is not None and state is not None and rt_joint:
            try:
                req, rt = self.realtime.apply(req, models.offers if models else {}, state.extra)
                boost, rt_log = rt.boost_categories, rt.log
            except Exception as exc:
                degraded.append("realtime_unavailable")
                log.warning("real-time state failed: %s", type(exc).__name__)
        t_read = time.perf_counter()
        if models is None:
            degraded.append("models_unavailable")
        offers_all = models.offers if models else {}
        names = req.candidates if req.candidates is not None else list(offers_all)
        cart = frozenset(offers_all[c].category for c in req.context.cart_items if c in offers_all)
        features = state.features if state else None
        inp = DecisionInput(
            unit_id=unit,
            known=known,
            features=features,
            now=now,
            placement=req.context.placement,
            channels=req.channels,
            candidates=[offers_all[n] for n in names],
            allocation=allocation,
            contact_history=state.contacts if state else None,
            purchased=state.purchased if state else frozenset(),
            cart_categories=cart,
            tz_name=req.context.timezone,
            uniform=_uniform(decision_id),
            boost_categories=boost,
        )
        if models is not None:
            decision = decide(
                inp, self.policy, models if features is not None else None, models.priors
            )
        else:
            decision = Decision(action=None, cold_start=True)
        decision.degraded[:0] = degraded
        t_score = time.perf_counter()
        await self._commit(
            decision_id, unit, known, now, req, allocation.arm, decision, models, rt_log
        )
        t_commit = time.perf_counter()
        resp = self._response(decision_id, req, decision, allocation, state, models, rt_log)
        self.metrics.observe_decision(
            resp.arm,
            decision.action.channel if decision.action else "none",
            [s.reason for s in decision.suppressed],
            bool(resp.degraded),
            {"read": t_read - t0, "decide": t_score - t_read, "commit": t_commit - t_score},
        )
        return resp

    async def _commit(
        self,
        decision_id: str,
        unit: str,
        known: bool,
        now: float,
        req: DecideRequest,
        arm: str,
        d: Decision,
        models: ModelSet | None,
        rt_log: dict[str, Any] | None = None,
    ) -> None:
        """Reserve the contact (atomic cap check) and append the decision record."""
        a = d.action
        policy = self.policy.contact_policy
        if a is not None and a.channel in policy.capped_channels and policy.count_on == "decision":
            try:
                blocked = await self._redis(
                    self.store.reserve_contact(unit, a.channel, now, decision_id)
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
        record = self._record(decision_id, unit, known, now, req, arm, d, models, rt_log)
        summary = None
        if not d.opted_out:
            summary = _json.encode(
                {
                    "unit": unit,
                    "known": known,
                    "arm": arm,
                    "offer": d.action.offer.offer_id if d.action else None,
                    "channel": d.action.channel if d.action else None,
                    "ts": now,
                }
            )
        try:
            await self._redis(self.store.append_decision(decision_id, record, summary))
        except Exception:
            # durable before we answer: fsync'ed locally, replayed in order when Redis returns
            await asyncio.to_thread(self.spool.append, "decision", decision_id, record, summary)
            d.degraded.append("log_spooled")

    def _choice(self, c: Choice) -> dict[str, Any]:
        return {
            "offer": c.offer.offer_id,
            "channel": c.channel,
            "send_at": c.send_at,
            "local_hour": c.local_hour,
            "p": round(c.probability, 6),
            "ev": round(c.expected_value, 6),
            "propensity": round(c.propensity, 6),
            "channel_score": round(c.channel_score, 6),
            "hour_lift": round(c.hour_lift, 4),
        }

    def _record(
        self,
        decision_id: str,
        unit: str,
        known: bool,
        now: float,
        req: DecideRequest,
        arm: str,
        d: Decision,
        models: ModelSet | None,
        rt_log: dict[str, Any] | None = None,
    ) -> bytes:
        if d.opted_out:  # the fact of the call, nothing about the person
            return _json.encode(
                {"decision_id": decision_id, "ts": now, "opted_out": True,
                 "placement": req.context.placement, "policy_version": self.policy.version}
            )  # fmt: skip
        return _json.encode(
            {
                "decision_id": decision_id,
                "ts": now,
                "unit": unit,
                "known": known,
                "placement": req.context.placement,
                "trigger": req.context.trigger,
                "experiment": req.experiment.name
                if req.experiment
                else self.policy.experiments.default,
                "arm": arm,
                "holdout": d.would_have is not None or arm == "holdout",
                "policy": d.policy,
                "choice_probability": d.choice_probability,
                "action": self._choice(d.action) if d.action else None,
                "would_have": self._choice(d.would_have) if d.would_have else None,
                "alternatives": [self._choice(c) for c in d.alternatives],
                "suppressed": [[s.reason, s.offer_id, s.channel] for s in d.suppressed],
                "cold_start": d.cold_start,
                "degraded": d.degraded,
                "model_versions": models.versions if models else {},
                "policy_version": self.policy.version,
                **({"realtime": rt_log} if rt_log is not None else {}),
            }
        )

    def _response(
        self,
        decision_id: str,
        req: DecideRequest,
        d: Decision,
        allocation: Any,
        state: CustomerState | None,
        models: ModelSet | None,
        rt_log: dict[str, Any] | None = None,
    ) -> DecideResponse:
        feats = state.features if state else None
        tz = float(feats["tz_offset"][0]) if feats is not None and "tz_offset" in feats else None
        tz = None if tz is not None and tz != tz else tz
        realtime = self.policy.placements[req.context.placement].realtime

        def out(c: Choice) -> ActionOut:
            return ActionOut(
                offer_id=c.offer.offer_id,
                offer_name=c.offer.name,
                channel=c.channel,
                send_at=_iso(c.send_at, tz, req.context.timezone),
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
        explain = None
        if req.explain:
            explain = {
                "channel_scores": d.channel_scores,
                "hour_scores": d.hour_scores,
                "would_have": out(d.would_have) if d.would_have else None,
                "bucket": allocation.bucket,
                "caller_allocated": allocation.caller_allocated,
                # what the real-time layer saw (cart, recent events, identity link)
                "realtime": rt_log,
            }
        return DecideResponse(
            decision_id=decision_id,
            action=out(d.action) if d.action else None,
            alternatives=[out(c) for c in d.alternatives],
            suppressed=[
                SuppressedOut(s.reason, s.offer_id, s.channel, s.detail) for s in d.suppressed
            ],
            experiment=allocation.experiment,
            arm=allocation.arm,
            holdout=allocation.holdout,
            policy=d.policy,
            choice_probability=d.choice_probability,
            cold_start=d.cold_start,
            degraded=d.degraded,
            model_versions=models.versions if models else {},
            policy_version=self.policy.version,
            feature_age_seconds=age,
            explain=explain,
        )

    async def decide_batch(self, reqs: Sequence[DecideRequest]) -> list[DecideResponse]:
        return [await self.decide(r) for r in reqs]

    # -------------------------------------------------------------- feedback
    async def feedback(self, req: FeedbackRequest) -> FeedbackResponse:
        ts = (req.timestamp or datetime.now(UTC)).timestamp()
        payload = _json.encode(
            {"decision_id": req.decision_id, "event": req.event, "value": req.value, "ts": ts}
        )
        # read before the call: a replay may land the decision (and forget it) meanwhile
        was_spooled = req.decision_id in self.spool.spooled_decisions
        try:
            status = await self._redis(
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
                await self._redis(self.apply_feedback_effects(req.decision_id, req.event, ts))
            except Exception:
                # the outcome is in the log; what it implies (a purchase, a counted contact)
                # is made durable here and applied when Redis is back
                await asyncio.to_thread(
                    self.spool.append, "effects", req.decision_id, payload, req.event.encode()
                )
        return FeedbackResponse(decision_id=req.decision_id, event=req.event, status=result)  # type: ignore[arg-type]

    async def apply_feedback_effects(self, decision_id: str, event: str, at: float) -> bool:
        """What an accepted outcome implies for later decisions; idempotent.

        ``converted``: the offer joins the customer's purchases (eligibility excludes it);
        ``delivered`` with ``count_on: delivered``: the contact counts against the caps.
        Returns False when the decision's summary is unknown (expired or never logged).
        """
        raw = await self.store.get_decision(decision_id)
        if raw is None:
            return False
        s = _decode_summary.decode(raw)
        if event == "converted" and s.get("offer") and s.get("known"):
            await self.store.add_purchase(s["unit"], s["offer"])
        policy = self.policy.contact_policy
        if (
            event == "delivered"
            and policy.count_on == "delivered"
            and s.get("channel") in policy.capped_channels
        ):
            await self.store.reserve_contact(s["unit"], s["channel"], at, decision_id)
        return True
