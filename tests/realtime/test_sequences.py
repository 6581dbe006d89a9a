"""Triggered sequences: timers in Redis, atomic claims, exits, restarts, two schedulers.

The scheduling tests decide through a recording stand-in for the engine (the contract is one
async call DecideRequest -> DecideResponse); the tests that need the real decision path (caps,
quiet hours, arms in the decision log) use the app and the session's model bundle.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from contracts.keys import ACTIONS_STREAM as ACTIONS
from contracts.keys import contacts_key, decision_stream
from contracts.records import ActionRecord, encode
from service.delivery import DeliveryWorker
from service.domain.config import load_policy
from service.realtime.schemas import EventIn, EventsRequest
from service.realtime.sequences import (
    CLAIM_LUA,
    LEASES,
    TIMERS,
    Scheduler,
    Sequence,
    SequencesConfig,
    Step,
    instance_key,
    load_sequences,
)
from service.realtime.service import Realtime
from service.realtime.state import RealtimeStore
from service.schemas import ActionOut, DecideRequest, DecideResponse
from tests.realtime.conftest import settings_for

pytestmark = [pytest.mark.redis, pytest.mark.anyio]
H = 3600.0
T0 = time.time() - 5 * 86400  # events in the past: the scheduler runs on an explicit clock

CFG = SequencesConfig(
    version="test",
    sequences={
        "abandoned_cart": Sequence(
            trigger="cart_add",
            exit_on=["purchase"],
            steps=[
                Step(wait_hours=1, when=["cart_not_empty", "no_purchase_since_trigger"]),
                Step(wait_hours=24, when=["cart_not_empty", "no_purchase_since_trigger"]),
            ],
        )
    },
)


class RecordingDecide:
    """Stands in for DecisionEngine.decide: always an e-mail action; records the calls."""

    def __init__(self) -> None:
        self.calls: list[DecideRequest] = []

    async def __call__(self, req: DecideRequest) -> DecideResponse:
        self.calls.append(req)
        await asyncio.sleep(0)  # let concurrent schedulers interleave
        action = ActionOut(
            offer_id="OFF001", offer_name="x", channel="email", send_at="", send_now=False,
            expected_value=1.0, probability=0.1, propensity=0.1, channel_score=0.5, hour_lift=1.0,
        )  # fmt: skip
        return DecideResponse(
            decision_id=f"d{len(self.calls)}", action=action, alternatives=[], suppressed=[],
            experiment="nba", arm="model", holdout=False, policy="model", choice_probability=1.0,
            cold_start=False, degraded=[], model_versions={}, policy_version="t",
            feature_age_seconds=None,
        )  # fmt: skip


def make(client: aioredis.Redis, decide: Any) -> tuple[Realtime, Scheduler]:
    store = RealtimeStore(client)
    sched = Scheduler(client, CFG, store, decide, load_policy().experiments, clock=lambda: T0)
    return Realtime(store, sched, clock=lambda: T0 + 86400), sched  # inside the 7-day window


async def cart_add(rt: Realtime, unit: str, eid: str, ts: float) -> None:
    await rt.store.apply(unit, eid, "cart_add", ts, "OFF002", 10.0)
    assert rt.scheduler is not None
    await rt.scheduler.on_event(unit, "cart_add", ts)


async def purchase(rt: Realtime, unit: str, eid: str, ts: float) -> None:
    await rt.store.apply(unit, eid, "purchase", ts, "OFF002", 10.0)
    assert rt.scheduler is not None
    await rt.scheduler.on_event(unit, "purchase", ts)


def mine(outcomes: list[Any], unit: str) -> list[Any]:
    return [o for o in outcomes if o.unit == unit]


def test_shipped_config_loads() -> None:
    cfg = load_sequences()
    seq = cfg.sequences["abandoned_cart"]
    assert seq.trigger == "cart_add" and "purchase" in seq.exit_on and len(seq.steps) == 2


async def test_abandoned_cart_fires_each_step_then_stops(
    r: aioredis.Redis, uid: str, clean_timers: None
) -> None:
    decide = RecordingDecide()
    rt, sched = make(r, decide)
    await cart_add(rt, uid, "e1", T0)
    await cart_add(rt, uid, "e2", T0 + 600)  # before the first step: the wait restarts
    assert mine(await sched.run_due(T0 + H + 1), uid) == []
    first = mine(await sched.run_due(T0 + 600 + H + 1), uid)
    assert [o.outcome for o in first] == ["fired"] and first[0].step == 0
    assert decide.calls[-1].customer_id == uid
    assert decide.calls[-1].context.trigger == "seq:abandoned_cart:0"
    assert mine(await sched.run_due(T0 + 600 + 2 * H), uid) == []
    second = mine(await sched.run_due(T0 + 600 + 26 * H), uid)
    assert [(o.outcome, o.step) for o in second] == [("fired", 1)]
    assert mine(await sched.run_due(T0 + 30 * 86400), uid) == []  # stopped after 2 steps
    assert not await r.exists(instance_key("abandoned_cart", uid))
    acts = [json.loads(f[b"record"]) for _, f in await r.xrange(ACTIONS)]
    assert [a["action_id"].split(":")[1] for a in acts if a["unit"] == uid] == ["0", "1"]


async def test_purchase_ends_the_sequence_at_once(
    r: aioredis.Redis, uid: str, clean_timers: None
) -> None:
    rt, sched = make(r, RecordingDecide())
    await cart_add(rt, uid, "e1", T0)
    await purchase(rt, uid, "e2", T0 + 60)
    assert not await r.exists(instance_key("abandoned_cart", uid))
    assert mine(await sched.run_due(T0 + 30 * 86400), uid) == []
    # a purchase after the first step also ends it; an emptied cart exits at the next step
    await cart_add(rt, f"{uid}b", "e3", T0)
    assert len(mine(await sched.run_due(T0 + H + 1), f"{uid}b")) == 1
    await rt.store.apply(f"{uid}b", "e4", "cart_remove", T0 + H + 5, "OFF002")
    out = mine(await sched.run_due(T0 + 26 * H), f"{uid}b")
    assert [o.outcome for o in out] == ["exited"] and out[0].arm


async def test_survives_a_restart_between_steps_and_a_crash_mid_step(
    redis_url: str, uid: str, clean_timers: None
) -> None:
    c1 = aioredis.Redis.from_url(redis_url)
    rt, sched = make(c1, RecordingDecide())
    await cart_add(rt, uid, "e1", T0)
    assert len(mine(await sched.run_due(T0 + H + 1), uid)) == 1
    await c1.aclose()  # the process goes away: nothing was kept in memory
    c2 = aioredis.Redis.from_url(redis_url)
    # a second process claims step 1 and dies before running it (lease held)...
    claimed = await c2.eval(CLAIM_LUA, 2, TIMERS, LEASES, T0 + 26 * H, T0 + 26 * H + 120, 100)
    assert any(m.decode().startswith(f"{uid}|") for m in claimed)
    _, fresh = make(c2, RecordingDecide())
    assert mine(await fresh.run_due(T0 + 26 * H + 60), uid) == []  # lease still valid
    out = mine(await fresh.run_due(T0 + 26 * H + 121), uid)  # lease expired: runs once
    assert [(o.outcome, o.step) for o in out] == [("fired", 1)]
    await c2.aclose()


async def test_a_retried_event_completes_the_sequences_its_first_attempt_did_not(
    r: aioredis.Redis, uid: str, clean_timers: None
) -> None:
    """The first attempt of each event got as far as the state (then failed: a 503); the
    caller's retry starts or ends the sequence without applying the event twice."""
    rt, _ = make(r, RecordingDecide())
    key = instance_key("abandoned_cart", uid)

    def batch(eid: str, type_: str, ts: float, **kw: str) -> EventsRequest:
        when = datetime.fromtimestamp(ts, UTC)
        return EventsRequest(events=[EventIn(event_id=eid, type=type_, timestamp=when, **kw)])

    await rt.store.apply(uid, "e1", "cart_add", T0, "OFF002", 10.0, pending=True)
    assert not await r.exists(key)
    out = await rt.ingest(batch("e1", "cart_add", T0, customer_id=uid, offer_id="OFF002"))
    assert out.results[0].status == "applied" and await r.exists(key)
    assert (await rt.store.read(uid)).cart == {"OFF002": 1}  # not added twice
    started = await r.hgetall(key)
    again = await rt.ingest(batch("e1", "cart_add", T0, customer_id=uid, offer_id="OFF002"))
    assert again.results[0].status == "duplicate" and await r.hgetall(key) == started

    await rt.store.apply(uid, "e2", "purchase", T0 + 60, "OFF002", 10.0, pending=True)
    assert await r.exists(key)
    out = await rt.ingest(batch("e2", "purchase", T0 + 60, customer_id=uid, offer_id="OFF002"))
    assert out.results[0].status == "applied" and not await r.exists(key)

    # identify: the anonymous cart was merged, the attempt failed before the rest
    anon = f"{uid}-anon"
    await rt.ingest(batch("a1", "cart_add", T0 + 120, anonymous_id=anon, offer_id="OFF003"))
    await rt.store.identify(anon, f"{uid}c", "i1", T0 + 180)
    assert not await r.exists(instance_key("abandoned_cart", f"{uid}c"))
    out = await rt.ingest(
        batch("i1", "identify", T0 + 180, anonymous_id=anon, customer_id=f"{uid}c")
    )
    assert out.results[0].status == "applied"
    assert await r.exists(instance_key("abandoned_cart", f"{uid}c"))
    assert (await rt.store.read(f"{uid}c")).cart == {"OFF003": 1}  # merged once


async def test_two_schedulers_never_fire_the_same_step(
    redis_url: str, r: aioredis.Redis, uid: str, clean_timers: None
) -> None:
    units = [f"{uid}-{i}" for i in range(40)]
    rt, _ = make(r, RecordingDecide())
    for i, u in enumerate(units):
        await cart_add(rt, u, f"e{i}", T0)
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(2)]
    decides = [RecordingDecide(), RecordingDecide()]
    scheds = [make(c, d)[1] for c, d in zip(clients, decides, strict=True)]
    for s in scheds:
        s.batch = 7  # several claim rounds each
    outcomes: list[Any] = []
    for now in (T0 + H + 1, T0 + 26 * H):
        while True:
            got = await asyncio.gather(*(s.run_due(now) for s in scheds))
            outcomes += [o for batch in got for o in batch]
            if not any(got):
                break
    fired = [(o.unit, o.step) for o in outcomes if o.outcome == "fired" and o.unit in units]
    assert sorted(fired) == sorted((u, k) for u in units for k in (0, 1))  # each exactly once
    assert all(len(d.calls) > 0 for d in decides)  # both did work
    for c in clients:
        await c.aclose()


async def test_delivery_worker_acks_and_drops_repeats(
    redis_url: str, uid: str, clean_timers: None
) -> None:
    sync = redis.Redis.from_url(redis_url)
    sent: list[ActionRecord] = []
    worker = DeliveryWorker(sync, "w1", send=sent.append, group=f"g-{uid}")
    worker.run_once()  # drain what earlier tests left
    sent.clear()
    rec = encode(
        ActionRecord(
            action_id=f"{uid}:0", unit=uid, sequence="abandoned_cart", step=0,
            decision_id="d0", arm="model", offer_id="OFF001", channel="email",
            send_at="2026-11-16T10:00:00+00:00", ts=0.0,
        )
    )  # fmt: skip
    sync.xadd(ACTIONS, {"action_id": f"{uid}:0", "record": rec})
    sync.xadd(ACTIONS, {"action_id": f"{uid}:0", "record": rec})  # re-emitted after a crash
    assert worker.run_once() == 1 and [a.action_id for a in sent] == [f"{uid}:0"]
    assert sync.xpending(ACTIONS, f"g-{uid}")["pending"] == 0
    sync.close()


# ---------------------------------------------------------------- with the real engine
@pytest.fixture
async def engine(redis_url: str, bundle: Path, tmp_path: Path) -> Any:
    """The app's engine and real-time layer, built as the lifespan builds them (this loop)."""
    from service.adapters.models import load_models
    from service.adapters.redis_store import RedisStore
    from service.adapters.spool import Spool
    from service.app import redis_client
    from service.engine import DecisionEngine
    from service.observability import Metrics
    from service.realtime.service import build_realtime

    s = settings_for(redis_url, bundle, tmp_path / "spool")
    policy = load_policy()
    client = redis_client(s)
    store = RedisStore(client, policy.contact_policy)
    eng = DecisionEngine(load_models(s), policy, store, Spool(s.paths.spool_dir), Metrics(), 0.5)
    eng.realtime = build_realtime(client, eng, s)
    yield eng
    await store.close()


def _customer(small_world: Path, tz: int | None = None) -> str:
    import pandas as pd

    truth = pd.read_parquet(small_world / "truth" / "truth_customers.parquet")
    ok = truth[~truth["anonymous"] & ~truth["opted_out"] & truth["consent_email"]]
    if tz is not None and "tz_offset" in ok:
        ok = ok[ok["tz_offset"] == tz]
    return str(ok["customer_id"].iloc[3])


async def test_steps_decide_through_the_engine_with_caps_and_quiet_hours(
    engine: Any, r: aioredis.Redis, small_world: Path, redis_store: Any, clean_timers: None
) -> None:
    realtime: Realtime = engine.realtime
    assert realtime.scheduler is not None
    sched = realtime.scheduler
    cid = _customer(small_world)
    now = time.time() - 2 * H
    await r.delete(contacts_key(cid), instance_key("abandoned_cart", cid))
    await realtime.store.apply(cid, f"{cid}-x{now}", "cart_add", now, "OFF002", 10.0)
    await sched.on_event(cid, "cart_add", now)
    out = mine(await sched.run_due(now + H + 1), cid)
    assert len(out) == 1 and out[0].outcome in ("fired", "no_action", "deferred")
    o = out[0]
    assert o.decision_id and o.arm  # logged like a decision, with the arm
    rows = await r.xrevrange(decision_stream(o.decision_id), count=100)
    rec = next(json.loads(f[b"record"]) for _, f in rows if o.decision_id.encode() in f[b"record"])
    assert rec["trigger"] == "seq:abandoned_cart:0" and rec["arm"] == o.arm
    if o.outcome == "fired" and o.channel in ("email", "push", "sms"):
        acts = [json.loads(f[b"record"]) for _, f in await r.xrevrange(ACTIONS, count=50)]
        a = next(x for x in acts if x["action_id"] == o.action_id)
        local = datetime.fromisoformat(a["send_at"])
        quiet = {"email": range(23, 30), "push": range(21, 32), "sms": range(21, 32)}[o.channel]
        assert local.hour not in quiet and (local.hour + 24) not in quiet
    # caps: fill every outbound cap, the next step cannot use an outbound channel
    for i in range(3):
        await r.zadd(contacts_key(cid), {f"{now + H + i:.3f}|email|fill{i}": now + H + i})
    out2 = mine(await sched.run_due(now + 26 * H), cid)
    assert out2 and all(x.channel not in ("email", "push", "sms") for x in out2)


# ------------------------------------------------------------ reminders (issue 16.4)
def test_the_abandoned_cart_steps_remind_of_the_cart() -> None:
    seq = load_sequences().sequences["abandoned_cart"]
    assert all(s.remind == "cart" for s in seq.steps)


async def test_a_step_asks_for_a_reminder_of_the_cart(
    r: aioredis.Redis, uid: str, clean_timers: None
) -> None:
    decide = RecordingDecide()
    store = RealtimeStore(r)
    cfg = load_sequences()
    sched = Scheduler(r, cfg, store, decide, load_policy().experiments, clock=lambda: T0)
    await store.apply(uid, "e1", "cart_add", T0, "SKU-lamp", 30.0, category="home")
    await sched.on_event(uid, "cart_add", T0)
    out = mine(await sched.run_due(T0 + H + 1), uid)
    assert [o.outcome for o in out] == ["fired"]
    assert decide.calls[-1].context.remind == "cart"
    state = await store.read(uid)
    assert state.cart == {"SKU-lamp": 1} and state.cart_categories == {"SKU-lamp": "home"}
    assert state.features is not None and state.features["cart_value_rt"] == 30.0


def _customers(small_world: Path, n: int) -> list[str]:
    import pandas as pd

    truth = pd.read_parquet(small_world / "truth" / "truth_customers.parquet")
    ok = truth[~truth["anonymous"] & ~truth["opted_out"] & truth["consent_email"]]
    return [str(c) for c in ok["customer_id"].iloc[10 : 10 + n]]


async def test_a_cart_reminder_offers_the_carted_item_or_its_category(
    engine: Any, r: aioredis.Redis, small_world: Path
) -> None:
    """The reminder is of what was left: the carted offer; for an item outside the catalogue,
    an offer of its category; for an empty cart, nothing. The response says which."""
    from service.schemas import Context, ExperimentRef, ReminderOut

    realtime: Realtime = engine.realtime
    offers = engine.models.offers
    item_cust, cat_cust, empty_cust = _customers(small_world, 3)
    now = time.time() - 2 * H
    for c in (item_cust, cat_cust, empty_cust):
        # a fresh customer: no contacts, cart, purchases, responses or real-time state left by
        # other tests (a newer event of theirs would make this older cart_add "late")
        stale = [k async for k in r.scan_iter(match=f"nb:{{{c}}}:*")]
        if stale:
            await r.delete(*stale)

    def ask(cid: str) -> DecideRequest:
        return DecideRequest(
            customer_id=cid,
            context=Context(placement="campaign", remind="cart"),
            experiment=ExperimentRef(arm="model"),
            now=datetime.fromtimestamp(now + H, UTC),
        )

    await realtime.store.apply(item_cust, f"{item_cust}-r{now}", "cart_add", now, "OFF003", 10.0)
    resp = await engine.decide(ask(item_cust))
    assert resp.action is not None and resp.action.offer_id == "OFF003", resp.suppressed
    assert resp.reminder == ReminderOut(
        kind="item", item_id="OFF003", category=offers["OFF003"].category
    )
    home = offers["OFF004"].category
    await realtime.store.apply(
        cat_cust, f"{cat_cust}-r{now}", "cart_add", now, "SKU-lamp", 30.0, category=home
    )
    resp = await engine.decide(ask(cat_cust))
    assert resp.action is not None and offers[resp.action.offer_id].category == home
    assert resp.reminder == ReminderOut(kind="category", item_id="SKU-lamp", category=home)
    resp = await engine.decide(ask(empty_cust))
    assert resp.action is None and resp.reminder is None
    assert any("nothing in the cart" in s.detail for s in resp.suppressed)
