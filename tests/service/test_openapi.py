"""The served OpenAPI document is what the service does (issue 14.7).

Schemathesis drives the running service against it in tests/reliability/test_schemathesis.py;
these tests pin down what a reader of the document relies on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from litestar.testing import AsyncTestClient

from contracts.settings import Settings
from service.api.openapi import OPERATIONS
from service.app import create_app
from service.domain.config import load_policy
from tests.support import make_settings

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

ERROR_REF = "#/components/schemas/ErrorBody"


@pytest.fixture(scope="module")
def settings(
    redis_url: str, model_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    return make_settings(
        NEXTBEST_REDIS_URL=redis_url,
        NEXTBEST_MODELS_DIR=model_bundle,
        NEXTBEST_API_KEYS="openapi-key",
        NEXTBEST_SPOOL_DIR=tmp_path_factory.mktemp("spool"),
        NEXTBEST_MODEL_POLL_S=0,
    )


@pytest.fixture
async def doc(settings: Settings) -> AsyncIterator[dict[str, Any]]:
    async with AsyncTestClient(app=create_app(settings)) as c:
        resp = await c.get("/schema/openapi.json")
        assert resp.status_code == 200
        out: dict[str, Any] = resp.json()
        yield out


def validator(doc: dict[str, Any], name: str) -> Any:
    """A validator of component ``name`` that resolves the document's other components."""
    schema = {**doc["components"]["schemas"][name], "components": doc["components"]}
    return jsonschema_rs.Draft202012Validator(schema, validate_formats=True)


async def test_every_answer_is_documented(doc: dict[str, Any]) -> None:
    """Every status an operation can answer, each error an ErrorBody (400 documented
    Litestar's ``{status_code, detail, extra}``; 401-503 were missing)."""
    for (method, path), (secured, errors) in OPERATIONS.items():
        responses = doc["paths"][path][method.lower()]["responses"]
        assert set(responses) >= {"200", *(str(e) for e in errors), "500"}, (path, responses)
        for status in (*errors, 500):
            schema = responses[str(status)]["content"]["application/json"]["schema"]
            assert schema == {"$ref": ERROR_REF}, (path, status)
        if secured:
            assert "WWW-Authenticate" in responses["401"]["headers"]
            assert "Retry-After" in responses["429"]["headers"]
    body_routes = [p for (m, p), (_, e) in OPERATIONS.items() if 415 in e]
    assert sorted(body_routes) == ["/decide", "/decide/batch", "/events", "/feedback"]


async def test_bearer_scheme_on_the_keyed_operations(doc: dict[str, Any]) -> None:
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": doc["components"]["securitySchemes"]["bearer"]["description"],
    }
    for (method, path), (secured, _) in OPERATIONS.items():
        op = doc["paths"][path][method.lower()]
        assert op["security"] == ([{"bearer": []}] if secured else []), path


async def test_request_fields_are_described_and_constrained(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    for name in ("DecideRequest", "Context", "BatchRequest", "FeedbackRequest", "EventIn"):
        assert schemas[name]["additionalProperties"] is False, name
        for field, prop in schemas[name]["properties"].items():
            first = prop.get("anyOf", [prop])[0]
            assert "$ref" in first or first.get("description"), (name, field)
    customer = schemas["DecideRequest"]["properties"]["customer_id"]["anyOf"][0]
    assert customer["maxLength"] == 128 and customer["pattern"]  # item constraints kept
    cart = schemas["Context"]["properties"]["cart_items"]
    assert cart["maxItems"] == 100 and cart["items"]["maxLength"] == 64
    assert schemas["DecideRequest"]["examples"] and schemas["EventsRequest"]["examples"]


async def test_one_id_means_a_string_not_null(doc: dict[str, Any]) -> None:
    """``"anonymous_id": null`` satisfied the documented "one id" rule."""
    v = validator(doc, "DecideRequest")
    ctx = {"placement": "home_banner"}
    assert v.is_valid({"context": ctx, "anonymous_id": "a"})
    assert v.is_valid({"context": ctx, "customer_id": "C1", "anonymous_id": None})
    assert not v.is_valid({"context": ctx, "anonymous_id": None})
    assert not v.is_valid({"context": ctx})


async def test_configuration_is_in_the_schema(doc: dict[str, Any], settings: Settings) -> None:
    """What the service refuses with 422 is outside the schema: placements, time zones,
    offers, channels, experiments and arms, the years of ``now``."""
    v = validator(doc, "DecideRequest")
    base: dict[str, Any] = {"customer_id": "C1", "context": {"placement": "home_banner"}}
    policy = load_policy(settings.policy.policy_file)
    ctx = doc["components"]["schemas"]["Context"]["properties"]
    assert ctx["placement"]["enum"] == sorted(policy.placements)
    for ok in (
        {"context": {"placement": "checkout", "timezone": "Europe/Berlin"}},
        {"candidates": ["OFF001", "OFF002"], "channels": ["web"]},
        {"experiment": {"name": "nba", "arm": "explore"}},
        {"experiment": {"arm": "holdout"}},
        {"experiment": {"arm": "explore"}},
        {"experiment": {"name": "send_time", "arm": "fixed_10am"}},
        {"now": "2026-11-16T09:00:00+01:00"},
    ):
        assert v.is_valid({**base, **ok}), ok
    for bad in (
        {"context": {"placement": "nowhere"}},
        {"context": {"placement": "checkout", "timezone": "America"}},
        {"candidates": ["NOPE"]},
        {"candidates": ["OFF001", "OFF001"]},
        {"channels": ["fax"]},
        {"experiment": {"name": "nba", "arm": "fixed_10am"}},  # an arm of send_time
        {"experiment": {"arm": "fixed_10am"}},  # no name: the default experiment (nba)
        {"now": "0001-01-01T00:00:00Z"},
        {"now": "2026-11-16T09:00:00"},  # no UTC offset
    ):
        assert not v.is_valid({**base, **bad}), bad
