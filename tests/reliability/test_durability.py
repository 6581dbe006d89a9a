"""Nothing acknowledged is lost: effects of outcomes, sequences of retried events, feedback
for spooled decisions, whatever Redis, the network or a restart did in between.

* An outcome acknowledged while Redis stalled: the write may land after the service gave
  up on it, so its replay meets "duplicate"; what the outcome implies (a purchase, a counted
  contact) is still applied, once.
* An event batch answered 503 while Redis stalled may have been applied meanwhile; its retry
  still starts (or ends) the sequences the events trigger, once.
* A decision acknowledged from the local spool is known to every process of the host,
  also after a restart, until the replay has put it in Redis: its feedback is queued, never
  refused with 404.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis
import yaml
from litestar.testing import AsyncTestClient

from contracts.keys import contacts_key, purchased_key, sequence_instance_key
from loadtests.faults import RedisProcess
from service.adapters.redis_store import read_decisions, read_feedback
from service.adapters.spool import Spool
from service.app import create_app
from service.realtime.state import RealtimeStore
from tests.deploy.processes import Child, free_port, wait_http
from tests.reliability.conftest import API_KEY, AUTH, settings_for, stall
from tests.reliability.test_degraded import decide, wait_until

ROOT = Path(__file__).resolve().parents[2]
SERVICE = [sys.executable, "-m", "service"]
POLICY = ROOT / "service" / "config" / "policy.yaml"


def counting_delivered_policy(tmp_path: Path) -> Path:
    """The shipped policy, but contacts count on delivery and web is a capped channel."""
    raw = yaml.safe_load(POLICY.read_text())
    raw["contact_policy"]["count_on"] = "delivered"
    raw["contact_policy"]["capped_channels"] = [*raw["contact_policy"]["capped_channels"], "web"]
    out = tmp_path / "policy.yaml"
    out.write_text(yaml.safe_dump(raw))
    return out


class TestOutcomeEffects:
    @pytest.mark.anyio
    @pytest.mark.parametrize("event", ["converted", "delivered"])
    async def test_an_outcome_acknowledged_during_a_stall_has_its_effect_once(
        self, event: str, model_bundle: Path, own_redis: RedisProcess, tmp_path: Path
    ) -> None:
        env: dict[str, object] = {}
        if event == "delivered":
            env["NEXTBEST_POLICY_FILE"] = counting_delivered_policy(tmp_path)
        app = create_app(settings_for(own_redis.url, model_bundle, tmp_path / "spool", **env))
        unit = "C0000009"
        warm = {"event": "opened" if event == "converted" else "dismissed"}
        async with AsyncTestClient(app=app) as c:
            d = await decide(c, customer_id=unit, context={"placement": "home_banner"})
            assert d["degraded"] == [] and d["action"]["channel"] == "web"
            # Redis has taken feedback before (its script is cached: a stalled write runs
            # when Redis wakes up instead of failing with NOSCRIPT)
            await c.post("/feedback", json={**warm, "decision_id": d["decision_id"]}, headers=AUTH)
            body = {"decision_id": d["decision_id"], "event": event}
            with stall(own_redis, 1.0):
                fb = await c.post("/feedback", json=body, headers=AUTH)
            # acknowledged from the spool; Redis runs the write it was sent once awake
            assert fb.status_code == 200 and fb.json()["status"] == "spooled"
            await wait_until(lambda: _no_pending(app))
            r = redis.Redis.from_url(own_redis.url)

            def effect() -> list[bytes]:
                if event == "converted":
                    return sorted(r.smembers(purchased_key(unit)))
                mine = d["decision_id"].encode()
                return [m for m in r.zrange(contacts_key(unit), 0, -1) if mine in m]

            expected_once = [d["action"]["offer_id"].encode()] if event == "converted" else None
            got = effect()
            if expected_once is not None:
                assert got == expected_once
            else:
                assert len(got) == 1 and b"|web|" in got[0]
            assert [(x.decision_id, x.event) for x in read_feedback(r)] == [
                (d["decision_id"], warm["event"]),
                (d["decision_id"], event),
            ]
            # the client retries: a duplicate, and the effect is still there once
            again = await c.post("/feedback", json=body, headers=AUTH)
            assert again.status_code == 200 and again.json()["status"] == "duplicate"
            assert effect() == got
            if event == "converted":  # and the next decision does not offer it again
                nxt = await decide(c, customer_id=unit, context={"placement": "home_banner"})
                assert nxt["action"]["offer_id"] != d["action"]["offer_id"]


async def _no_pending(app: Any) -> bool:
    return not app.state.engine.spool.has_pending()


class TestRetriedEvents:
    @pytest.mark.anyio
    async def test_a_batch_retried_after_its_503_starts_and_ends_the_sequence(
        self, model_bundle: Path, own_redis: RedisProcess, tmp_path: Path
    ) -> None:
        app = create_app(settings_for(own_redis.url, model_bundle, tmp_path / "spool"))
        cid = "C0000042"
        instance = sequence_instance_key("abandoned_cart", cid)
        now = time.time()

        def batch(eid: str, type_: str, at: float) -> dict[str, Any]:
            ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + "Z"
            one = {"event_id": eid, "type": type_, "customer_id": cid, "timestamp": ts}
            return {"events": [{**one, "offer_id": "OFF002", "value": 10.0}]}

        async with AsyncTestClient(app=app) as c:
            r = redis.Redis.from_url(own_redis.url)
            # Redis has taken events before (their script is cached)
            view = batch("view-1", "page_view", now - 90)
            assert (await c.post("/events", json=view, headers=AUTH)).status_code == 200
            add = batch("cart-1", "cart_add", now - 60)
            with stall(own_redis, 1.0):
                first = await c.post("/events", json=add, headers=AUTH)
            assert first.status_code == 503  # the caller is told to retry the batch
            retry = await c.post("/events", json=add, headers=AUTH)
            assert retry.status_code == 200, retry.text
            assert retry.json()["results"][0]["status"] == "applied"
            assert r.exists(instance), "the retried cart_add did not start the sequence"
            started = r.hgetall(instance)
            # the decision path sees the cart (the feature row was written on the retry)
            reader = aioredis.Redis.from_url(own_redis.url)
            rt = await RealtimeStore(reader).read(cid)
            await reader.aclose()
            assert rt.features is not None and rt.features["cart_items_rt"] == 1
            # once more: a duplicate, and the sequence is the same instance, not a new one
            again = await c.post("/events", json=add, headers=AUTH)
            assert again.json()["results"][0]["status"] == "duplicate"
            assert r.hgetall(instance) == started

            buy = batch("buy-1", "purchase", now - 30)
            with stall(own_redis, 1.0):
                first = await c.post("/events", json=buy, headers=AUTH)
            assert first.status_code == 503
            retry = await c.post("/events", json=buy, headers=AUTH)
            assert retry.status_code == 200 and retry.json()["results"][0]["status"] == "applied"
            assert not r.exists(instance), "the retried purchase did not end the sequence"


# ------------------------------------------------------------------ processes
def service_env(
    redis_url: str, bundle: Path, spool: Path, port: int, **extra: str
) -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update(
        {
            "NEXTBEST_HOST": "127.0.0.1",
            "NEXTBEST_PORT": str(port),
            "NEXTBEST_REDIS_URL": redis_url,
            "NEXTBEST_API_KEYS": API_KEY,
            "NEXTBEST_DEV_MODE": "0",
            "NEXTBEST_MODELS_DIR": str(bundle),
            "NEXTBEST_SPOOL_DIR": str(spool),
            "NEXTBEST_MODEL_POLL_S": "0",
            "NEXTBEST_SCHEDULER_POLL_S": "0",
            "NEXTBEST_REDIS_TIMEOUT_MS": "100",
            "NEXTBEST_LOG_LEVEL": "WARNING",
            **extra,
        }
    )
    return env


def post(base: str, path: str, body: dict[str, Any]) -> httpx.Response:
    """One request on a new connection (several workers share the port: any may answer)."""
    with httpx.Client(base_url=base, timeout=30) as c:
        return c.post(path, json=body, headers=AUTH)


def spool_files(spool: Path) -> list[Path]:
    return [p for p in spool.glob("spool-*") if p.stat().st_size > 0]


@contextlib.contextmanager
def replay_held_back(spool: Path) -> Iterator[Callable[[], None]]:
    """Claim the spool files the way a replayer does, and send nothing: until ``release()``
    (or the end of the block) no process can replay them; then any takes them over."""
    claimer = Spool(spool)
    held = claimer._claim()

    def release() -> None:
        while held:
            os.close(held.pop()[1])

    try:
        yield release
    finally:
        release()
        claimer.close()


@pytest.fixture
def down_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server address where nothing answers until the test starts it."""
    rp = RedisProcess(tmp_path / "redis")
    rp.dir.mkdir()
    try:
        yield rp
    finally:
        rp.kill()


def spool_decisions(base: str, n: int, spool: Path, processes: int) -> list[str]:
    """Decisions while Redis is down (acknowledged from the spool) until at least ``n`` are and
    ``processes`` server processes have each spooled some."""
    ids: list[str] = []
    for i in range(400):
        r = post(
            base, "/decide", {"anonymous_id": f"sp-{i}", "context": {"placement": "home_banner"}}
        )
        assert r.status_code == 200 and "log_spooled" in r.json()["degraded"], r.text
        ids.append(r.json()["decision_id"])
        if len(ids) >= n and len(list(spool.glob("spool-*.jsonl"))) >= processes:
            return ids
    raise AssertionError(f"decisions were not spooled by {processes} processes")


def feedback_statuses(base: str, ids: list[str]) -> dict[str, int]:
    seen: dict[str, int] = {}
    for did in ids:
        r = post(base, "/feedback", {"decision_id": did, "event": "clicked"})
        key = str(r.status_code) if r.status_code != 200 else r.json()["status"]
        seen[key] = seen.get(key, 0) + 1
    return seen


def landed_once(rp: RedisProcess, ids: list[str], timeout_s: float = 30.0) -> None:
    """Every decision and its one feedback reach Redis, each exactly once."""
    r = redis.Redis.from_url(rp.url)
    deadline = time.monotonic() + timeout_s
    while True:
        decisions = [x.decision_id for x in read_decisions(r)]
        feedback = [x.decision_id for x in read_feedback(r)]
        if (sorted(decisions) == sorted(ids) and sorted(feedback) == sorted(ids)) or (
            time.monotonic() > deadline
        ):
            break
        time.sleep(0.25)
    assert sorted(decisions) == sorted(ids)
    assert sorted(feedback) == sorted(ids)


@pytest.mark.slow
class TestFeedbackForSpooledDecisions:
    """The replay of the spooled decisions is held back (another replayer has claimed the
    files, as a long replay does) so that feedback meets Redis up and its decision still in
    the spool: the state "right after Redis returns", made deterministic."""

    def test_after_a_restart(
        self, model_bundle: Path, down_redis: RedisProcess, tmp_path: Path
    ) -> None:
        spool = tmp_path / "spool"
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = service_env(down_redis.url, model_bundle, spool, port)
        with Child(SERVICE, tmp_path / "a.log", env=env, cwd=ROOT) as first:
            wait_http(first, f"{base}/health", 180)
            ids = spool_decisions(base, 30, spool, 1)
        # stopped; its last replay could not reach Redis: the decisions wait in the spool
        assert spool_files(spool)
        with replay_held_back(spool) as release:  # a replay elsewhere has them, unsent yet
            down_redis.start()
            with Child(SERVICE, tmp_path / "b.log", env=env, cwd=ROOT) as second:
                wait_http(second, f"{base}/ready", 180)
                assert feedback_statuses(base, ids) == {"spooled": len(ids)}
                release()  # that replayer is gone: the service takes its files over
                landed_once(down_redis, ids)

    def test_with_two_workers(
        self, model_bundle: Path, down_redis: RedisProcess, tmp_path: Path
    ) -> None:
        spool = tmp_path / "spool"
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = service_env(down_redis.url, model_bundle, spool, port, NEXTBEST_WORKERS="2")
        with Child(SERVICE, tmp_path / "w.log", env=env, cwd=ROOT) as server:
            wait_http(server, f"{base}/health", 180)
            ids = spool_decisions(base, 40, spool, 2)
            with replay_held_back(spool) as release:  # as above; then Redis returns
                down_redis.start()
                time.sleep(1.5)  # both workers' breakers have closed again: Redis answers
                assert feedback_statuses(base, ids) == {"spooled": len(ids)}
                release()
                landed_once(down_redis, ids)
