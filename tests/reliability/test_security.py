"""Per-key rate limits, CORS off by default, and no personal data or keys in the logs."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from litestar.testing import AsyncTestClient

from contracts.keys import auth_failures_key
from service.app import create_app
from tests.reliability.conftest import API_KEY, AUTH, settings_for

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

NOW = "2026-11-16T09:00:00Z"


async def test_rate_limit_is_per_key(model_bundle: Path, redis_url: str, tmp_path: Path) -> None:
    s = settings_for(
        redis_url,
        model_bundle,
        tmp_path / "spool",
        NEXTBEST_API_KEYS=f"{API_KEY},other-key",
        NEXTBEST_RATE_LIMIT_PER_S=0.5,
        NEXTBEST_RATE_LIMIT_BURST=2,
    )
    body = {"anonymous_id": "rl-1", "context": {"placement": "home_banner"}, "now": NOW}
    async with AsyncTestClient(app=create_app(s)) as c:
        codes = [(await c.post("/decide", json=body, headers=AUTH)).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        limited = await c.post("/decide", json=body, headers=AUTH)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert limited.json()["error"] == "rate_limited"
        other = await c.post("/decide", json=body, headers={"Authorization": "Bearer other-key"})
        assert other.status_code == 200  # another key has its own budget
        assert (await c.get("/health")).status_code == 200  # probes are not limited


@pytest.mark.parametrize(("store", "served"), [("redis", 2), ("local", 4)])
async def test_rate_limit_holds_across_workers(
    model_bundle: Path, redis_url: str, tmp_path: Path, store: str, served: int
) -> None:
    """Issue 14.8: with two workers the configured rate doubled. Two apps (two workers, or
    two replicas) on one Redis share one budget per key; ``local`` buckets do not."""
    key = f"key-{uuid.uuid4().hex}"  # a fresh bucket whatever ran before
    env = {
        "NEXTBEST_API_KEYS": key,
        "NEXTBEST_RATE_LIMIT_PER_S": 0.01,
        "NEXTBEST_RATE_LIMIT_BURST": 2,
        "NEXTBEST_RATE_LIMIT_STORE": store,
    }
    body = {"anonymous_id": "rl-2", "context": {"placement": "home_banner"}, "now": NOW}
    auth = {"Authorization": f"Bearer {key}"}
    apps = [
        create_app(settings_for(redis_url, model_bundle, tmp_path / f"s{i}", **env)) for i in (1, 2)
    ]
    async with AsyncTestClient(app=apps[0]) as w1, AsyncTestClient(app=apps[1]) as w2:
        codes = [
            (await w.post("/decide", json=body, headers=auth)).status_code
            for w in (w1, w2, w1, w2, w1, w2)
        ]
    assert codes.count(200) == served and codes.count(429) == 6 - served, codes


async def test_failed_authentication_is_throttled_per_client(
    model_bundle: Path, redis_url: str, tmp_path: Path
) -> None:
    """Issue 14.8: failed keys were never throttled. After the budget a client gets 429 on
    every request, the right key included (no oracle), until the budget refills."""
    s = settings_for(redis_url, model_bundle, tmp_path / "spool", NEXTBEST_AUTH_FAILURES_PER_MIN=3)
    body = {"anonymous_id": "af-1", "context": {"placement": "home_banner"}, "now": NOW}
    async with AsyncTestClient(app=create_app(s)) as c:
        # the test's own client: the app's pool lives on the app's event loop
        redis.Redis.from_url(redis_url).delete(auth_failures_key("testclient"))
        wrong = {"Authorization": f"Bearer wrong-{uuid.uuid4().hex}"}
        codes = [(await c.post("/decide", json=body, headers=wrong)).status_code for _ in range(4)]
        assert codes == [401, 401, 401, 429]
        right = await c.post("/decide", json=body, headers=AUTH)
        assert right.status_code == 429 and "failed authentications" in right.json()["message"]
        assert 15 <= int(right.headers["retry-after"]) <= 20  # one failure refills in 20 s
        c.app.state.keyring.limits.check_client("another-client")  # others are not blocked


async def test_cors_is_off_unless_configured(
    model_bundle: Path, redis_url: str, tmp_path: Path
) -> None:
    preflight = {
        "Origin": "https://shop.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    off = create_app(settings_for(redis_url, model_bundle, tmp_path / "s1"))
    async with AsyncTestClient(app=off) as c:
        r = await c.options("/decide", headers=preflight)
        assert "access-control-allow-origin" not in r.headers
    on = create_app(
        settings_for(
            redis_url, model_bundle, tmp_path / "s2", NEXTBEST_CORS_ORIGINS="https://shop.example"
        )
    )
    async with AsyncTestClient(app=on) as c:
        r = await c.options("/decide", headers=preflight)
        assert r.headers.get("access-control-allow-origin") == "https://shop.example"


async def test_logs_carry_no_ids_and_no_keys(
    model_bundle: Path,
    redis_url: str,
    redis_store: Any,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    customer, visitor = "C0000042", "anon-secret-visitor"
    s = settings_for(redis_url, model_bundle, tmp_path / "spool", NEXTBEST_LOG_LEVEL="DEBUG")
    async with AsyncTestClient(app=create_app(s)) as c:
        for body in (
            {"customer_id": customer, "context": {"placement": "campaign"}, "explain": True},
            {"anonymous_id": visitor, "context": {"placement": "home_banner"}},
            {"customer_id": customer, "context": {"placement": "nowhere"}},  # a 422
        ):
            await c.post("/decide", json={**body, "now": NOW}, headers=AUTH)
        d = (
            await c.post(
                "/decide",
                json={"customer_id": customer, "context": {"placement": "home_banner"}},
                headers=AUTH,
            )
        ).json()
        await c.post("/feedback", json={"decision_id": d["decision_id"], "event": "converted",
                                        "value": 12.5}, headers=AUTH)  # fmt: skip
        await c.post(
            "/events",
            json={"events": [{"event_id": "e-sec-1", "type": "cart_add", "customer_id": customer, "timestamp": NOW,
                              "offer_id": "OFF001"}]},
            headers=AUTH,
        )  # fmt: skip
        await c.post(
            "/decide", json={"customer_id": customer}, headers={"Authorization": "Bearer x"}
        )
    logging.getLogger("nextbest").debug("end of test")  # the handler did write to stderr
    out, err = capfd.readouterr()
    logs = out + err
    assert '"logger": "nextbest' in logs
    for secret in (customer, visitor, API_KEY):
        assert secret not in logs, secret
