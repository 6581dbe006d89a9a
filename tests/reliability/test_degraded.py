"""Redis down or slow: /decide keeps answering with the documented fallback, writes are
spooled durably, /ready says why it is not ready, and everything recovers by itself."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
import redis
from litestar.testing import AsyncTestClient

from contracts.keys import purchased_key
from loadtests.faults import RedisProcess
from service.adapters.redis_store import read_decisions, read_feedback
from service.app import create_app
from tests.reliability.conftest import AUTH, settings_for

pytestmark = [pytest.mark.anyio]

NOW = "2026-11-16T09:00:00Z"
OUTBOUND = {"email", "push", "sms"}


async def decide(c: AsyncTestClient[Any], **body: Any) -> dict[str, Any]:
    body.setdefault("now", NOW)
    r = await c.post("/decide", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


async def wait_until(cond: Any, seconds: float = 20.0) -> None:
    for _ in range(int(seconds / 0.1)):
        if await cond():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met in time")


async def test_redis_down_then_back_without_a_restart(
    model_bundle: Path, dead_port: int, tmp_path: Path
) -> None:
    url = f"redis://127.0.0.1:{dead_port}/0"
    app = create_app(settings_for(url, model_bundle, tmp_path / "spool"))
    async with AsyncTestClient(app=app) as c:
        engine = app.state.engine
        # --- down: every decision answers, from priors, on no channel whose caps are unknown
        ready = await c.get("/ready")
        assert ready.status_code == 503
        assert any("redis unreachable" in p for p in ready.json()["problems"])
        ids = []
        for i in range(40):
            d = await decide(c, customer_id=f"C{i:07d}", context={"placement": "campaign"})
            assert "redis_unavailable" in d["degraded"] and d["cold_start"]
            # consent and caps are unknown: nothing outbound, each channel says why
            assert d["action"] is None or d["action"]["channel"] not in OUTBOUND
            stopped = {
                s["channel"]: s["detail"]
                for s in d["suppressed"]
                if s["reason"] in ("no_consent", "frequency_cap")
            }
            assert set(stopped) == OUTBOUND and all("unknown" in v for v in stopped.values())
            ids.append(d["decision_id"])
        web = await decide(c, anonymous_id="anon-1", context={"placement": "home_banner"})
        assert web["action"]["channel"] == "web" and "log_spooled" in web["degraded"]
        ids.append(web["decision_id"])
        # the breaker kept requests from paying the timeout again and again
        assert engine.breaker.opened < 10
        fb = await c.post(
            "/feedback", json={"decision_id": web["decision_id"], "event": "clicked"}, headers=AUTH
        )
        assert fb.status_code == 200 and fb.json()["status"] == "spooled"
        buyer = await decide(c, customer_id="C0000007", context={"placement": "home_banner"})
        ids.append(buyer["decision_id"])
        bought = await c.post(
            "/feedback",
            json={"decision_id": buyer["decision_id"], "event": "converted", "value": 20.0},
            headers=AUTH,
        )
        assert bought.json()["status"] == "spooled"
        assert engine.spool.pending() == len(ids) + 2
        ev = await c.post(
            "/events",
            json={"events": [{"event_id": "e1", "type": "page_view", "customer_id": "C0000001",
                              "timestamp": NOW}]},
            headers=AUTH,
        )  # fmt: skip
        # events are not spooled: the caller is told to retry (idempotent by event_id)
        assert ev.status_code == 503 and ev.headers["retry-after"] == "1"
        assert ev.json()["error"] == "unavailable"

        # --- Redis comes back on the same address: no restart of the service
        rp = RedisProcess(tmp_path / "redis", port=dead_port)
        rp.dir.mkdir()
        rp.start()
        try:

            async def recovered() -> bool:
                return (await c.get("/ready")).status_code == 200 and not engine.spool.has_pending()

            await wait_until(recovered)
            d = await decide(c, anonymous_id="anon-2", context={"placement": "home_banner"})
            assert d["degraded"] == []
            r = redis.Redis.from_url(url)
            logged = [x.decision_id for x in read_decisions(r)]
            assert sorted(logged) == sorted([*ids, d["decision_id"]])  # each exactly once
            fbs = list(read_feedback(r))
            assert sorted((x.decision_id, x.event) for x in fbs) == sorted(
                [(web["decision_id"], "clicked"), (buyer["decision_id"], "converted")]
            )
            # what the replayed purchase implies was applied too: the offer is excluded now
            assert r.smembers(purchased_key("C0000007")) == {buyer["action"]["offer_id"].encode()}
            again = await c.post(
                "/feedback",
                json={"decision_id": web["decision_id"], "event": "clicked"},
                headers=AUTH,
            )
            assert again.json()["status"] == "duplicate"
        finally:
            rp.kill()


async def test_a_stalled_redis_does_not_stall_decisions(
    model_bundle: Path, own_redis: RedisProcess, tmp_path: Path
) -> None:
    app = create_app(settings_for(own_redis.url, model_bundle, tmp_path / "spool"))
    async with AsyncTestClient(app=app) as c:
        ok = await decide(c, anonymous_id="anon-1", context={"placement": "home_banner"})
        assert ok["degraded"] == []
        probe = redis.Redis.from_url(own_redis.url, socket_timeout=10)
        # the server holds every client's commands for 3 s (a stall, not a refusal)
        assert probe.execute_command("CLIENT", "PAUSE", "3000", "ALL")
        answered_during_pause: list[bool] = []

        def paused() -> bool:
            info = redis.Redis.from_url(own_redis.url, socket_timeout=10)
            return bool(info.execute_command("CLIENT", "LIST"))  # blocked until unpause

        answers = []
        for i in range(20):
            answers.append(
                await decide(c, anonymous_id=f"anon-{i}", context={"placement": "home_banner"})
            )
        # still paused after all 20 answers: a command sent now waits for the pause to end
        waiter = threading.Thread(target=lambda: answered_during_pause.append(paused()))
        waiter.start()
        await asyncio.sleep(0.3)
        assert waiter.is_alive()  # Redis is still stalled, and the decisions were not
        assert all(a["action"] and a["action"]["channel"] == "web" for a in answers)
        assert all("log_spooled" in a["degraded"] for a in answers), [
            a["degraded"] for a in answers
        ]
        waiter.join()
        assert answered_during_pause == [True]
        await wait_until(lambda: _no_pending(app))
        logged = {x.decision_id for x in read_decisions(redis.Redis.from_url(own_redis.url))}
        assert {a["decision_id"] for a in answers} <= logged


async def _no_pending(app: Any) -> bool:
    return not app.state.engine.spool.has_pending()


async def test_outcome_effects_survive_a_failure_after_the_append(
    model_bundle: Path, own_redis: RedisProcess, tmp_path: Path
) -> None:
    """Redis takes the feedback, then fails before its effects: still a 200, and the
    purchase is applied from the spool."""
    app = create_app(settings_for(own_redis.url, model_bundle, tmp_path / "spool"))
    async with AsyncTestClient(app=app) as c:
        engine = app.state.engine
        d = await decide(c, customer_id="C0000009", context={"placement": "home_banner"})
        real = engine.store.add_purchase

        async def broken(*_: Any) -> bool:
            raise redis.ConnectionError("gone right after the append")

        engine.store.add_purchase = broken
        fb = await c.post(
            "/feedback",
            json={"decision_id": d["decision_id"], "event": "converted", "value": 5.0},
            headers=AUTH,
        )
        assert fb.status_code == 200 and fb.json()["status"] == "accepted"
        assert engine.spool.pending() == 1
        engine.store.add_purchase = real
        await wait_until(lambda: _no_pending(app))
        r = redis.Redis.from_url(own_redis.url)
        assert r.smembers(purchased_key("C0000009")) == {d["action"]["offer_id"].encode()}


async def test_feedback_racing_the_replay_of_its_decision_is_taken_not_refused(
    model_bundle: Path, own_redis: RedisProcess, tmp_path: Path
) -> None:
    """A decision spooled while Redis failed; its feedback asks Redis just before the replay
    lands the decision and takes it out of the spool: the feedback asks again and is
    accepted (200), never a 404."""
    from service.engine.replay import replay_once as _replay_once

    app = create_app(settings_for(own_redis.url, model_bundle, tmp_path / "spool"))
    async with AsyncTestClient(app=app) as c:
        engine = app.state.engine
        engine.spool.has_pending = lambda: False  # the background loop stays out of the way
        real_append, real_feedback = engine.store.append_decision, engine.store.append_feedback

        async def failing(*_: Any) -> bool:
            raise redis.ConnectionError("gone for this one write")

        engine.store.append_decision = failing
        d = await decide(c, anonymous_id="anon-race", context={"placement": "home_banner"})
        assert "log_spooled" in d["degraded"]
        engine.store.append_decision = real_append
        engine.breaker.success()  # Redis answers again (the replay loop would close it)
        seen: list[int] = []

        async def racing(decision_id: str, event: str, payload: bytes) -> tuple[int, Any]:
            status, marker = await real_feedback(decision_id, event, payload)
            seen.append(status)
            await _replay_once(engine)  # the replay lands the decision meanwhile
            return status, marker

        engine.store.append_feedback = racing
        fb = await c.post(
            "/feedback", json={"decision_id": d["decision_id"], "event": "clicked"}, headers=AUTH
        )
        # Redis did not know the decision when the feedback asked, and the spool no longer
        # held it when the feedback looked there: it asked Redis again
        assert seen == [0, 1]
        assert fb.status_code == 200, fb.text
        assert fb.json()["status"] == "accepted"
        engine.store.append_feedback = real_feedback
        del engine.spool.has_pending  # the background loop is back (nothing left to replay)
        await wait_until(lambda: _no_pending(app))
        r = redis.Redis.from_url(own_redis.url)
        assert [(x.decision_id, x.event) for x in read_feedback(r)] == [
            (d["decision_id"], "clicked")
        ]
        assert [x.decision_id for x in read_decisions(r)] == [d["decision_id"]]
