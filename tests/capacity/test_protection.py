"""Redis memory protection on a real Redis: no evicting policy, a backlog is a /ready reason,
and a full Redis (``noeviction``, tiny ``maxmemory``) loses no accepted decision."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis
from litestar.testing import AsyncTestClient

from contracts.settings import Settings
from loadtests.faults import RedisProcess
from service.adapters.redis_store import EvictingPolicy, read_decisions, read_feedback
from service.app import create_app
from tests.support import make_settings

pytestmark = [pytest.mark.anyio]

API_KEY = "capacity-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def settings(url: str, tmp: Path, **env: object) -> Settings:
    # no model bundle: decisions are the no-model fallback, logged like any other
    return make_settings(
        NEXTBEST_REDIS_URL=url,
        NEXTBEST_MODELS_DIR=tmp / "no-models",
        NEXTBEST_API_KEYS=API_KEY,
        NEXTBEST_SPOOL_DIR=tmp / "spool",
        NEXTBEST_MODEL_POLL_S=0,
        NEXTBEST_SCHEDULER_POLL_S=0,
        NEXTBEST_REDIS_TIMEOUT_MS=500,
        **env,
    )


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl", "allkeys-lfu"])
async def test_an_evicting_redis_stops_the_start(
    rp: RedisProcess, tmp_path: Path, policy: str
) -> None:
    redis.Redis.from_url(rp.url).config_set("maxmemory-policy", policy)
    with pytest.raises(BaseException) as info:  # the lifespan's task group wraps it
        async with AsyncTestClient(app=create_app(settings(rp.url, tmp_path))):
            pass
    (exc,) = leaves(info.value)
    assert isinstance(exc, EvictingPolicy)
    assert f"maxmemory-policy is '{policy}'" in str(exc) and "noeviction" in str(exc)


def leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [x for e in exc.exceptions for x in leaves(e)]
    return [exc]


async def test_a_disabled_config_command_is_tolerated(tmp_path: Path) -> None:
    proc = RedisProcess(tmp_path / "redis", aof=False, extra=("--rename-command", "CONFIG", ""))
    proc.dir.mkdir()
    try:
        proc.start()
        async with AsyncTestClient(app=create_app(settings(proc.url, tmp_path))) as c:
            r = await c.post(
                "/decide",
                json={"anonymous_id": "a1", "context": {"placement": "home_banner"}},
                headers=AUTH,
            )
            assert r.status_code == 200, r.text
    finally:
        proc.kill()


async def test_a_log_backlog_is_a_ready_reason(rp: RedisProcess, tmp_path: Path) -> None:
    s = settings(rp.url, tmp_path, NEXTBEST_LOG_BACKLOG_MAX=5)
    async with AsyncTestClient(app=create_app(s)) as c:
        body = (await c.get("/ready")).json()
        assert not any("backlog" in p for p in body["problems"])
        for i in range(6):
            r = await c.post(
                "/decide",
                json={"anonymous_id": f"a{i}", "context": {"placement": "home_banner"}},
                headers=AUTH,
            )
            assert r.status_code == 200
        r = await c.get("/ready")
        assert r.status_code == 503
        (reason,) = [p for p in r.json()["problems"] if "backlog" in p]
        assert "6 entries not exported" in reason and "NEXTBEST_LOG_BACKLOG_MAX=5" in reason


async def test_a_full_redis_spools_and_loses_nothing(rp: RedisProcess, tmp_path: Path) -> None:
    """noeviction + a maxmemory just above what Redis holds: writes are refused with OOM;
    every decision and outcome is still answered, spooled, and lands once when room returns."""
    admin = redis.Redis.from_url(rp.url)
    admin.config_set("maxmemory-policy", "noeviction")
    async with AsyncTestClient(app=create_app(settings(rp.url, tmp_path))) as c:
        ok: list[str] = []
        for i in range(20):  # room: logged in Redis
            r = await c.post(
                "/decide",
                json={"anonymous_id": f"a{i}", "context": {"placement": "home_banner"}},
                headers=AUTH,
            )
            assert r.status_code == 200
            ok.append(r.json()["decision_id"])
        admin.config_set("maxmemory", max(int(admin.info("memory")["used_memory"]) - 4096, 1))
        with pytest.raises(redis.ResponseError, match="used memory > 'maxmemory'"):
            admin.set("probe", "x" * 1000)
        full: list[dict[str, Any]] = []
        for i in range(30):
            r = await c.post(
                "/decide",
                json={"anonymous_id": f"b{i}", "context": {"placement": "home_banner"}},
                headers=AUTH,
            )
            assert r.status_code == 200, r.text
            full.append(r.json())
        assert all("log_spooled" in d["degraded"] for d in full)
        fb = await c.post(
            "/feedback", json={"decision_id": ok[0], "event": "delivered"}, headers=AUTH
        )
        assert fb.status_code == 200 and fb.json()["status"] == "spooled"
        fb2 = await c.post(
            "/feedback", json={"decision_id": full[0]["decision_id"], "event": "opened"},
            headers=AUTH,
        )  # fmt: skip
        assert fb2.status_code == 200 and fb2.json()["status"] == "spooled"
        assert len(read_decisions(admin)) == 20
        admin.config_set("maxmemory", 0)  # room again: the spool replays (every second)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(read_feedback(admin)) < 2:
            time.sleep(0.2)
        logged = Counter(x.decision_id for x in read_decisions(admin))
        assert set(logged) == {*ok, *(d["decision_id"] for d in full)}
        assert set(logged.values()) == {1}  # each exactly once
        assert Counter((x.decision_id, x.event) for x in read_feedback(admin)) == {
            (ok[0], "delivered"): 1,
            (full[0]["decision_id"], "opened"): 1,
        }


async def test_markers_of_an_earlier_version_are_still_honoured(rp: RedisProcess) -> None:
    """A decision logged before the marker became a hash (a string marker, a string key per
    outcome): its feedback is accepted once, its duplicate refused, its effects find it."""
    import redis.asyncio as aioredis

    from contracts.keys import decision_key, feedback_marker_key
    from contracts.records import DecisionMarker, decode_marker, encode
    from service.adapters.redis_store import RedisStore
    from service.domain.config import load_policy

    did = "ab" * 16
    old = encode(DecisionMarker(unit="C1", known=True, arm="model", offer="OFF001", ts=1.0))
    r = redis.Redis.from_url(rp.url)
    r.set(decision_key(did), old, ex=3600)
    r.set(feedback_marker_key(did, "opened"), b"1", ex=3600)  # logged by the earlier version
    client = aioredis.Redis.from_url(rp.url)
    store = RedisStore(client, load_policy().contact_policy)
    try:
        assert await store.get_decision(did) == old
        assert decode_marker(old).offer == "OFF001"
        assert await store.append_feedback(did, "opened", b"{}") == (2, old)
        assert await store.append_feedback(did, "converted", b"{}") == (1, old)
        assert await store.append_feedback(did, "converted", b"{}") == (2, old)
        assert not await store.append_decision(did, b"{}", b"x")  # already logged
        assert await store.append_feedback("cd" * 16, "opened", b"{}") == (0, None)
        assert await store.get_decision("cd" * 16) is None
    finally:
        await client.aclose()
