"""The served OpenAPI document says exactly what the service does.

* **Bodies**: the component schemas are msgspec's own JSON Schema of the very structs that
  decode requests and encode responses (every constraint, description and example of
  :mod:`service.schemas` and :mod:`service.realtime.schemas`, ``additionalProperties:
  false`` where unknown fields are refused), not a second rendering of them.
* **Configuration**: what depends on the policy file and the loaded models is written in:
  placements, offer ids, channels, experiments and arms, IANA time zones, and "one of
  ``customer_id`` or ``anonymous_id``" (a string, not null).
* **Answers**: every status code each operation can answer, each error with
  :class:`~service.schemas.ErrorBody` (and ``WWW-Authenticate`` on 401, ``Retry-After`` on
  429 and 503); the bearer security scheme on every operation that needs a key.

Schemathesis checks the served document against the running service in the test suite
(tests/reliability/test_schemathesis.py): every check, positive and negative data.
:func:`document_api` runs when the models load and again after each model swap.
"""

from __future__ import annotations

import copy
from typing import Any

import msgspec
from litestar import Litestar
from litestar._openapi.plugin import OpenAPIPlugin
from litestar.openapi.spec import Components, SecurityScheme

from contracts.features import DEFAULT_SPEC
from service.adapters.models import ModelSet
from service.domain.allocation import HOLDOUT
from service.domain.config import PolicyConfig
from service.realtime import schemas as rt
from service.schemas import (
    TIMEZONES,
    BatchRequest,
    BatchResponse,
    DecideRequest,
    DecideResponse,
    ErrorBody,
    FeedbackRequest,
    FeedbackResponse,
    Readiness,
)

__all__ = ["OPERATIONS", "document_api"]

_BODIES = (
    DecideRequest,
    BatchRequest,
    FeedbackRequest,
    rt.EventsRequest,
    DecideResponse,
    BatchResponse,
    FeedbackResponse,
    rt.EventsResponse,
    ErrorBody,
    Readiness,
)
_ERROR = {"$ref": "#/components/schemas/ErrorBody"}
_WHY = {
    400: "not JSON, a repeated key, or not the schema (``field`` names the first problem)",
    401: "no API key, or an unknown one",
    403: "the key may not use this route",
    404: "no such decision",
    413: "the body is larger than NEXTBEST_MAX_BODY_BYTES",
    415: "the body is not declared as JSON (Content-Type)",
    422: "the shape is right but the service cannot honour it (``field`` says what)",
    429: "over the key's rate, or too many failed authentications from this client",
    500: "a bug (logged with its place, never its data)",
    503: "a dependency is down; retry the whole request after Retry-After",
}
_HEADERS = {
    401: {"WWW-Authenticate": "Bearer"},
    429: {"Retry-After": "seconds to wait"},
    503: {"Retry-After": "seconds to wait"},
}
_BODY = (400, 413, 415)
_KEY = (401, 429)
#: (method, path) -> (needs a key, the error statuses it can answer besides 500)
OPERATIONS: dict[tuple[str, str], tuple[bool, tuple[int, ...]]] = {
    ("POST", "/decide"): (True, (*_BODY, *_KEY, 422)),
    ("POST", "/decide/batch"): (True, (*_BODY, *_KEY, 422)),
    ("POST", "/feedback"): (True, (*_BODY, *_KEY, 404)),
    ("POST", "/events"): (True, (*_BODY, *_KEY, 503)),
    ("POST", "/admin/models/reload"): (True, (*_KEY, 403)),
    ("GET", "/health"): (False, ()),
    ("GET", "/ready"): (False, ()),  # 503 answers a Readiness body, documented below
    ("GET", "/models"): (False, ()),
}


def _nullable(schema: dict[str, Any], **replace: Any) -> None:
    """Update the non-null branch of an optional property (``anyOf: [X, null]``)."""
    branch = schema["anyOf"][0] if "anyOf" in schema else schema
    branch.update(replace)


def _components(policy: PolicyConfig, models: ModelSet | None) -> dict[str, Any]:
    _, schemas = msgspec.json.schema_components(_BODIES, ref_template="#/components/schemas/{name}")
    spec = models.spec if models is not None else DEFAULT_SPEC
    offers = sorted(models.offers) if models is not None else []
    ctx = schemas["Context"]["properties"]
    ctx["placement"]["enum"] = sorted(policy.placements)
    _nullable(ctx["timezone"], enum=sorted(TIMEZONES))
    req = schemas["DecideRequest"]
    props = req["properties"]
    if offers:
        _nullable(props["candidates"], uniqueItems=True)
        props["candidates"]["anyOf"][0]["items"]["enum"] = offers
    else:  # no catalogue loaded: no candidate can be honoured
        props["candidates"] = {"type": "null"}
    props["channels"]["anyOf"][0]["items"]["enum"] = list(spec.channels)
    req["anyOf"] = [  # who the decision is for: a known customer or a visitor (not null)
        {"required": [name], "properties": {name: {"type": "string"}}}
        for name in ("customer_id", "anonymous_id")
    ]
    req["examples"] = [
        {
            "customer_id": "C0000042",
            "context": {"placement": "home_banner", "timezone": "Europe/Berlin"},
            "now": "2026-11-16T09:00:00Z",
        }
    ]
    schemas["ExperimentRef"] = _experiments(policy, schemas["ExperimentRef"])
    schemas["FeedbackRequest"]["examples"] = [
        {"decision_id": "019a6f3c2b1e4d5c6b7a8f9e0d1c", "event": "converted", "value": 42.5}
    ]
    schemas["EventsRequest"]["examples"] = [
        {
            "events": [
                {
                    "event_id": "e-1",
                    "type": "cart_add",
                    "customer_id": "C0000042",
                    "offer_id": "OFF001",
                    "value": 19.9,
                    "timestamp": "2026-11-16T09:00:00Z",
                }
            ]
        }
    ]
    return schemas


def _experiments(policy: PolicyConfig, base: dict[str, Any]) -> dict[str, Any]:
    """ExperimentRef: a configured experiment (default: the policy's) and one of its arms."""
    exps = policy.experiments
    variants = []
    for name, exp in sorted(exps.definitions.items()):
        names: list[Any] = [name]
        if name == exps.default:
            names.append(None)  # no name: the default experiment
        variant: dict[str, Any] = {
            "type": "object",
            "properties": {
                "name": {"enum": names},
                "arm": {"enum": [*(a.name for a in exp.arms), HOLDOUT, None]},
            },
            "additionalProperties": False,
        }
        if name != exps.default:  # another experiment's arm needs its name
            variant["required"] = ["name"]
        variants.append(variant)
    if exps.default is None:  # no experiment at all: only the holdout can be asked for
        variants.append(
            {
                "type": "object",
                "properties": {"name": {"type": "null"}, "arm": {"enum": [HOLDOUT, None]}},
                "additionalProperties": False,
            }
        )
    out = copy.deepcopy(base)
    out["anyOf"] = variants
    return out


def _response(status: int, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    resp: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if status in _HEADERS:
        resp["headers"] = {
            name: {"description": doc, "required": True, "schema": {"type": "string"}}
            for name, doc in _HEADERS[status].items()
        }
    return resp


def document_api(app: Litestar, policy: PolicyConfig, models: ModelSet | None) -> None:
    """Write the components, answers and security of the app's OpenAPI document."""
    openapi = app.openapi_schema
    openapi.components = openapi.components or Components()
    openapi.components.schemas = _components(policy, models)
    openapi.components.security_schemes = {
        "bearer": SecurityScheme(
            type="http",
            scheme="bearer",
            description="an API key: `Authorization: Bearer <key>` (admin routes: an admin key)",
        )
    }
    for path, item in (openapi.paths or {}).items():
        for method in ("get", "post"):
            op = getattr(item, method, None)
            if op is None:
                continue
            key = (method.upper(), path)
            if key not in OPERATIONS:
                raise RuntimeError(f"{key} has no entry in service.api.openapi.OPERATIONS")
            secured, errors = OPERATIONS[key]
            op.security = [{"bearer": []}] if secured else []
            ok = op.responses["200"] if op.responses else None
            responses: dict[str, Any] = {"200": ok}
            for status in (*errors, 500):
                responses[str(status)] = _response(status, _WHY[status], _ERROR)
            if path == "/ready":
                ready = {"$ref": "#/components/schemas/Readiness"}
                responses["200"] = _response(200, "ready", ready)
                responses["503"] = _response(503, "not ready: the problems say why", ready)
            op.responses = responses
    # Litestar renders the document once and keeps it: render this version next time
    app.plugins.get(OpenAPIPlugin)._openapi_schema = None
