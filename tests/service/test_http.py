"""End to end over HTTP through the app factory: real Redis, real exported models."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import redis
from litestar.testing import AsyncTestClient

from contracts.features import DEFAULT_SPEC
from contracts.keys import contacts_key, decision_stream, decision_streams, feedback_streams
from contracts.settings import Settings
from service.adapters.feast_redis import FeastRedisLayout
from service.app import create_app
from service.domain.allocation import allocate
from service.domain.config import load_policy
from tests.support import make_settings

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

API_KEY = "test-api-key-1"
ADMIN_KEY = "test-admin-key-1"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
NOW = "2026-11-16T09:00:00Z"
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def settings(
    redis_url: str, model_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    return make_settings(**settings_env(redis_url, model_bundle, tmp_path_factory))


def settings_env(
    redis_url: str, model_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, object]:
    return {
        "NEXTBEST_REDIS_URL": redis_url,
        "NEXTBEST_MODELS_DIR": model_bundle,
        "NEXTBEST_API_KEYS": API_KEY,
        "NEXTBEST_ADMIN_KEYS": f"sha256:{__import__('hashlib').sha256(ADMIN_KEY.encode()).hexdigest()}",
        "NEXTBEST_SPOOL_DIR": tmp_path_factory.mktemp("spool"),
        "NEXTBEST_MAX_BODY_BYTES": 64_000,
        "NEXTBEST_MODEL_POLL_S": 0,
        "NEXTBEST_REDIS_TIMEOUT_MS": 500,
    }


@pytest.fixture
async def client(settings: Settings, redis_store: Any) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(app=create_app(settings)) as c:
        yield c


@pytest.fixture(scope="module")
def people(small_world: Path) -> dict[str, Any]:
    truth = pd.read_parquet(small_world / "truth" / "truth_customers.parquet")
    exp = load_policy().experiments
    known = truth[~truth["anonymous"]]
    arms = {c: allocate(exp, c).arm for c in known["customer_id"]}
    in_model_arm = known["customer_id"].map(lambda c: arms[c] == "model").astype(bool)
    treated = known[in_model_arm & ~known["opted_out"]]
    outbound = treated["consent_email"] & treated["consent_push"]
    return {
        "consenting": [str(c) for c in treated.loc[outbound, "customer_id"].iloc[10:19]],
        "opted_out": str(known.loc[known["opted_out"], "customer_id"].iloc[0]),
        "holdout": next(c for c, a in arms.items() if a == "holdout"),
        "push": str(treated.loc[treated["consent_push"], "customer_id"].iloc[0]),
        "push2": str(treated.loc[treated["consent_push"], "customer_id"].iloc[1]),
        "treated": str(treated["customer_id"].iloc[5]),
    }


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def last_record(r: redis.Redis, decision_id: str) -> dict[str, Any]:
    stream = decision_stream(decision_id)
    rec: dict[str, Any] = json.loads(r.xrevrange(stream, count=1)[0][1][b"record"])
    assert rec["decision_id"] == decision_id
    return rec


def feedback_count(r: redis.Redis) -> int:
    return sum(r.xlen(s) for s in feedback_streams())


async def decide(c: AsyncTestClient[Any], **body: Any) -> dict[str, Any]:
    body.setdefault("now", NOW)
    body.setdefault("context", {"placement": "campaign"})
    resp = await c.post("/decide", json=body, headers=AUTH)
    assert resp.status_code == 200, resp.text
    out: dict[str, Any] = resp.json()
    return out


class TestDecide:
    async def test_known_customer_gets_an_explained_action(
        self, client: AsyncTestClient[Any], people: dict[str, str]
    ) -> None:
        d = await decide(client, customer_id=people["treated"], explain=True)
        assert d["decision_id"] and d["arm"] == "model" and not d["cold_start"]
        assert set(d["model_versions"]) == {
            "nextbest-propensity",
            "nextbest-send-time",
            "nextbest-channel",
        }
        # weekly snapshots materialized up to the world's end (NOW is 9 h later)
        assert d["feature_age_seconds"] is not None
        assert 0 <= d["feature_age_seconds"] <= 8 * 86400
        assert d["explain"]["channel_scores"] and len(d["explain"]["hour_scores"]) == 24
        if d["action"]:
            a = d["action"]
            assert a["expected_value"] > 0 and 0 < a["probability"] < 1
            assert a["send_at"] >= "2026-11-16"

    async def test_opted_out_customer(
        self, client: AsyncTestClient[Any], people: dict[str, str], r: redis.Redis
    ) -> None:
        d = await decide(client, customer_id=people["opted_out"])
        assert d["action"] is None
        assert d["suppressed"][0]["reason"] == "no_consent"
        rec = last_record(r, d["decision_id"])
        assert rec["decision_id"] == d["decision_id"] and rec["opted_out"]
        assert "unit" not in rec  # nothing about the person beyond the fact of the call

    async def test_holdout_member_gets_control_and_is_logged(
        self, client: AsyncTestClient[Any], people: dict[str, str], r: redis.Redis
    ) -> None:
        d = await decide(client, customer_id=people["holdout"])
        assert d["holdout"] and d["arm"] == "holdout" and d["action"] is None
        rec = last_record(r, d["decision_id"])
        assert rec["arm"] == "holdout" and rec["unit"] == people["holdout"] and rec["holdout"]
        if rec["would_have"]:  # the treated action it did not get is logged for lift
            assert any(s["reason"] == "holdout" for s in d["suppressed"])

    async def test_brand_new_customer_is_cold_start(self, client: AsyncTestClient[Any]) -> None:
        d = await decide(
            client,
            customer_id="C_NEVER_SEEN",
            context={"placement": "home_banner", "cart_items": ["OFF001"]},
        )
        assert d["cold_start"] and d["feature_age_seconds"] is None
        assert d["action"] is not None and d["action"]["channel"] == "web"

    async def test_anonymous_never_gets_outbound_channels(
        self, client: AsyncTestClient[Any]
    ) -> None:
        d = await decide(client, anonymous_id="anon-1")
        assert d["cold_start"]
        assert d["action"] is None or d["action"]["channel"] in ("web", "in_app")

    async def test_caps_hold_under_concurrent_requests(
        self, client: AsyncTestClient[Any], people: dict[str, str]
    ) -> None:
        cid = people["push2"]
        body = {"customer_id": cid, "context": {"placement": "push_batch"}, "now": NOW}
        resps = await asyncio.gather(
            *[client.post("/decide", json=body, headers=AUTH) for _ in range(20)]
        )
        actions = [x.json()["action"] for x in resps]
        assert all(x.status_code == 200 for x in resps)
        assert sum(1 for a in actions if a and a["channel"] == "push") <= 1
        reasons = {s["reason"] for x in resps for s in x.json()["suppressed"]}
        assert "frequency_cap" in reasons

    async def test_features_past_their_ttl_are_stale(
        self, client: AsyncTestClient[Any], people: dict[str, str], r: redis.Redis
    ) -> None:
        """Issue 14.6: 197 days after the last feature update the behaviour and engagement
        snapshots (TTL 21 days) are treated as missing and flagged, not served as fresh."""
        layout = FeastRedisLayout(DEFAULT_SPEC.raw)
        _, stamps = layout.decode(r.hmget(layout.key(people["treated"]), layout.all_fields))
        newest = max(stamps.values())
        later = datetime.fromtimestamp(newest + 197 * 86400, UTC).isoformat()
        fresh = await decide(client, customer_id=people["treated"])
        stale = await decide(client, customer_id=people["treated"], now=later, explain=True)
        assert not [d for d in fresh["degraded"] if d.startswith("features_stale")]
        assert {d for d in stale["degraded"] if d.startswith("features_stale")} == {
            "features_stale:customer_behaviour",
            "features_stale:customer_engagement",
        }
        # the age is the profile's (sign-up: within its 10-year TTL), not 197 days
        assert stale["feature_age_seconds"] > 197 * 86400
        assert stale["feature_age_seconds"] == pytest.approx(
            newest + 197 * 86400 - stamps["customer_profile"], abs=1
        )

    async def test_batch(self, client: AsyncTestClient[Any], people: dict[str, str]) -> None:
        reqs = [
            {"customer_id": people["treated"], "context": {"placement": "email"}, "now": NOW},
            {"anonymous_id": "anon-2", "context": {"placement": "home_banner"}, "now": NOW},
        ]
        resp = await client.post("/decide/batch", json={"requests": reqs}, headers=AUTH)
        assert resp.status_code == 200
        assert len(resp.json()["decisions"]) == 2

    async def test_refused_batch_decides_logs_and_reserves_nothing(
        self, client: AsyncTestClient[Any], people: dict[str, str], r: redis.Redis
    ) -> None:
        """Issue 14.5: a batch is all or nothing, and the error names the request."""
        ids = people["consenting"]
        reqs: list[dict[str, Any]] = [
            {"customer_id": c, "context": {"placement": "campaign"}, "now": NOW} for c in ids
        ]
        reqs.append({"customer_id": ids[0], "context": {"placement": "nope"}, "now": NOW})
        logged = sum(r.xlen(s) for s in decision_streams())
        contacts = [r.zcard(contacts_key(c)) for c in ids]
        resp = await client.post("/decide/batch", json={"requests": reqs}, headers=AUTH)
        assert resp.status_code == 422
        assert resp.json()["field"] == "requests[9].context.placement"
        assert sum(r.xlen(s) for s in decision_streams()) == logged
        assert [r.zcard(contacts_key(c)) for c in ids] == contacts
        # the same nine alone are decided (and would have reserved contacts)
        ok = await client.post("/decide/batch", json={"requests": reqs[:9]}, headers=AUTH)
        assert ok.status_code == 200
        assert sum(r.xlen(s) for s in decision_streams()) == logged + 9
        assert sum(r.zcard(contacts_key(c)) for c in ids) > sum(contacts)


class TestFeedback:
    async def test_feedback_is_idempotent_and_converted_excludes_offer(
        self, client: AsyncTestClient[Any], people: dict[str, str], r: redis.Redis
    ) -> None:
        d = await decide(client, customer_id=people["push"], context={"placement": "home_banner"})
        assert d["action"] is not None
        offer = d["action"]["offer_id"]
        before = feedback_count(r)
        body = {"decision_id": d["decision_id"], "event": "converted", "value": 42.0}
        first = await client.post("/feedback", json=body, headers=AUTH)
        second = await client.post("/feedback", json=body, headers=AUTH)
        assert first.json()["status"] == "accepted" and second.json()["status"] == "duplicate"
        assert feedback_count(r) == before + 1
        again = await decide(
            client, customer_id=people["push"], context={"placement": "home_banner"}
        )
        assert again["action"] is None or again["action"]["offer_id"] != offer
        assert any(
            s["offer_id"] == offer and s["reason"] == "ineligible" for s in again["suppressed"]
        )

    async def test_unknown_decision_is_404(self, client: AsyncTestClient[Any]) -> None:
        resp = await client.post(
            "/feedback", json={"decision_id": "nope", "event": "opened"}, headers=AUTH
        )
        assert resp.status_code == 404 and resp.json()["field"] == "decision_id"


class TestBadInput:
    @pytest.mark.parametrize(
        ("body", "status", "field"),
        [
            ({"context": {"placement": "campaign"}, "customer_id": 5}, 400, "customer_id"),
            ({"context": {"placement": "campaign"}, "customer_id": "C1\n"}, 400, "customer_id"),
            ({"context": {"placement": "campaign"}, "customer_id": "C1", "bogus": 1}, 400, "bogus"),
            ({"customer_id": "C1"}, 400, "context"),
            (
                {"context": {"placement": "campaign"}, "customer_id": "C1", "candidates": []},
                400,
                "candidates",
            ),
            (
                {
                    "context": {"placement": "campaign"},
                    "customer_id": "C1",
                    "candidates": [f"X{i}" for i in range(101)],
                },
                400,
                "candidates",
            ),
            (
                {"context": {"placement": "campaign"}, "customer_id": "C1", "candidates": ["NOPE"]},
                422,
                "candidates",
            ),
            (
                # channels are the models' vocabulary (configuration), checked by the engine
                {"context": {"placement": "campaign"}, "customer_id": "C1", "channels": ["fax"]},
                422,
                "channels[0]",
            ),
            ({"context": {"placement": "nowhere"}, "customer_id": "C1"}, 422, "context.placement"),
            ({"context": {"placement": "campaign"}}, 422, "customer_id"),
            (
                {
                    "context": {"placement": "campaign"},
                    "customer_id": "C1",
                    "experiment": {"name": "nba", "arm": "zzz"},
                },
                422,
                "experiment.arm",
            ),
            (
                {
                    "context": {"placement": "campaign", "timezone": "Mars/Base"},
                    "customer_id": "C1",
                },
                422,
                "context.timezone",
            ),
            (
                {
                    "context": {"placement": "campaign"},
                    "customer_id": "C1",
                    "now": "2026-11-16T09:00:00",  # no UTC offset: not the schema's date-time
                },
                400,
                "now",
            ),
        ],
    )
    async def test_rejected_with_field(
        self, client: AsyncTestClient[Any], body: dict[str, Any], status: int, field: str
    ) -> None:
        resp = await client.post("/decide", json=body, headers=AUTH)
        assert resp.status_code == status, resp.text
        err = resp.json()
        assert err["field"] is not None and err["field"].startswith(field), err
        assert err["error"] and err["message"]

    @pytest.mark.parametrize("path", ["/decide", "/decide/batch", "/feedback", "/events"])
    async def test_deep_nesting_is_400(self, client: AsyncTestClient[Any], path: str) -> None:
        """Issue 14.4: JSON nested 1,000 levels (2 KB) was a 500 on every route with a body."""
        deep = b"[" * 1000 + b"]" * 1000
        resp = await client.post(path, content=deep, headers={**AUTH, **JSON})
        assert resp.status_code == 400 and resp.json()["error"] == "invalid_request"

    async def test_invalid_utf8_is_400(self, client: AsyncTestClient[Any]) -> None:
        body = b'{"anonymous_id": "a\xff", "context": {"placement": "campaign"}}'
        resp = await client.post("/decide", content=body, headers={**AUTH, **JSON})
        assert resp.status_code == 400 and "UTF-8" in resp.json()["message"]

    @pytest.mark.parametrize("zone", ["America", "Etc", "America/", "../etc/passwd"])
    async def test_time_zone_must_be_an_iana_name(
        self, client: AsyncTestClient[Any], zone: str
    ) -> None:
        """Issue 14.4: a tz database folder ("America") was a 500."""
        body = {"anonymous_id": "a", "context": {"placement": "campaign", "timezone": zone}}
        resp = await client.post("/decide", json=body, headers=AUTH)
        assert resp.status_code == 422 and resp.json()["field"] == "context.timezone"

    @pytest.mark.parametrize("now", ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"])
    @pytest.mark.parametrize("zone", [None, "Europe/Berlin"])
    async def test_now_outside_its_years_is_422_and_logs_nothing(
        self, client: AsyncTestClient[Any], r: redis.Redis, now: str, zone: str | None
    ) -> None:
        """Issue 14.4: year 9999 with a time zone was a 500; year 1 was logged with a
        negative decision id."""
        logged = sum(r.xlen(s) for s in decision_streams())
        ctx = {"placement": "campaign", "timezone": zone}
        body = {"anonymous_id": "a", "context": ctx, "now": now}
        resp = await client.post("/decide", json=body, headers=AUTH)
        assert resp.status_code == 422 and resp.json()["field"] == "now", resp.text
        assert sum(r.xlen(s) for s in decision_streams()) == logged

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"content": b'{"anonymous_id": "a"}', "headers": {"Content-Type": "text/plain"}},
            {"data": {"anonymous_id": "a"}},  # a form
            {"files": {"f": ("x.json", b"{}", "application/json")}},  # multipart
            {"content": b'{"anonymous_id": "a"}'},  # no Content-Type at all
        ],
    )
    async def test_only_json_bodies(self, client: AsyncTestClient[Any], kwargs: Any) -> None:
        """Issue 14.8: text/plain, form and multipart bodies got 200."""
        headers = {**AUTH, **kwargs.pop("headers", {})}
        resp = await client.post("/decide", headers=headers, **kwargs)
        assert resp.status_code == 415 and resp.json()["error"] == "unsupported_media_type"

    async def test_json_with_charset_is_json(self, client: AsyncTestClient[Any]) -> None:
        body = json.dumps({"anonymous_id": "a", "context": {"placement": "home_banner"}})
        headers = {**AUTH, "Content-Type": "application/json; charset=utf-8"}
        resp = await client.post("/decide", content=body, headers=headers)
        assert resp.status_code == 200, resp.text

    async def test_duplicate_keys_are_400(self, client: AsyncTestClient[Any]) -> None:
        """Issue 14.8: a repeated key silently took the last value."""
        body = b'{"anonymous_id": "a", "context": {"placement": "campaign"}, "anonymous_id": "b"}'
        resp = await client.post("/decide", content=body, headers={**AUTH, **JSON})
        assert resp.status_code == 400 and resp.json()["field"] == "anonymous_id"
        assert "duplicate key" in resp.json()["message"]

    @pytest.mark.parametrize("path", ["/decide", "/events"])
    async def test_empty_body_says_so(self, client: AsyncTestClient[Any], path: str) -> None:
        """Issue 14.8: an empty body's message was 'data'."""
        resp = await client.post(path, content=b"", headers={**AUTH, **JSON})
        assert resp.status_code == 400
        assert resp.json()["message"] == "the request body is empty: send a JSON object"

    async def test_method_not_allowed_says_which_are(self, client: AsyncTestClient[Any]) -> None:
        """Issue 14.7: 405 had no Allow header."""
        resp = await client.get("/decide", headers=AUTH)
        assert resp.status_code == 405 and "POST" in resp.headers["allow"]

    async def test_malformed_json(self, client: AsyncTestClient[Any]) -> None:
        resp = await client.post(
            "/decide", content=b"{not json", headers={**AUTH, "Content-Type": "application/json"}
        )
        assert resp.status_code == 400 and resp.json()["error"] == "invalid_request"

    async def test_body_over_limit(self, client: AsyncTestClient[Any]) -> None:
        one = {"customer_id": "C1", "context": {"placement": "campaign", "device": "x" * 32}}
        big = {"requests": [one] * 1000}
        assert len(json.dumps(big)) > 64_000  # the limit these tests configure
        resp = await client.post("/decide/batch", json=big, headers=AUTH)
        assert resp.status_code == 413
        assert resp.json() == {
            "error": "body_too_large",
            "message": resp.json()["message"],
            "field": "body",
        }


class TestAuth:
    async def test_no_key_and_wrong_key(self, client: AsyncTestClient[Any]) -> None:
        body = {"customer_id": "C1", "context": {"placement": "campaign"}}
        no = await client.post("/decide", json=body)
        wrong = await client.post("/decide", json=body, headers={"Authorization": "Bearer x"})
        assert no.status_code == wrong.status_code == 401
        assert no.json() == wrong.json()  # the same answer whatever failed
        # issue 14.8: the 401 says how to authenticate
        assert no.headers["www-authenticate"].startswith("Bearer")

    async def test_admin_route_needs_admin_key(self, client: AsyncTestClient[Any]) -> None:
        api = await client.post("/admin/models/reload", headers=AUTH)
        admin = await client.post(
            "/admin/models/reload", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
        )
        assert api.status_code == 403
        assert admin.status_code == 200 and admin.json()["swapped"]

    def test_refuses_to_start_without_keys(self, settings: Settings) -> None:
        import msgspec

        with pytest.raises(RuntimeError, match="no API key"):
            no_keys = msgspec.structs.replace(settings.security, api_keys="", admin_keys="")
            create_app(msgspec.structs.replace(settings, security=no_keys))


class TestOps:
    async def test_health_ready_models_metrics_schema(
        self, client: AsyncTestClient[Any], settings: Settings
    ) -> None:
        assert (await client.get("/health")).json() == {"status": "ok"}
        ready = await client.get("/ready")
        assert ready.status_code == 200 and ready.json()["ready"]
        models = (await client.get("/models")).json()
        assert set(models["loaded"]["models"]) == {"propensity", "send_time", "channel"}
        # issue 14.8: the unauthenticated /models does not show the server's folders
        assert models["loaded"]["source"] == "bundle"
        assert str(settings.models.models_dir) not in json.dumps(models)
        await decide(client, anonymous_id="anon-3")
        metrics = (await client.get("/metrics")).text
        assert "nextbest_decisions_total" in metrics
        assert "nextbest_decide_stage_seconds_bucket" in metrics
        schema = (await client.get("/schema/openapi.json")).json()
        assert "/decide" in schema["paths"] and "/feedback" in schema["paths"]
