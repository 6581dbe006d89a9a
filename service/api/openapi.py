"""Make the served OpenAPI schema say exactly what the service accepts.

Litestar derives the schema from the msgspec structs, but two rules live elsewhere:
request structs reject unknown fields (``forbid_unknown_fields``), which the generated
schema leaves open, and the valid placements come from the policy file. Clients and
generated-test tools (Schemathesis runs in the test suite) read the schema, so it is
tightened here, once, before it is first served.
"""

from __future__ import annotations

import inspect
from types import ModuleType

import msgspec
from litestar import Litestar
from litestar.openapi.spec import Schema

from service.domain.config import PolicyConfig

__all__ = ["tighten_openapi"]


def _closed_structs(*modules: ModuleType) -> set[str]:
    names = set()
    for module in modules:
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, msgspec.Struct)
                and obj.__struct_config__.forbid_unknown_fields
            ):
                names.add(name)
    return names


def tighten_openapi(app: Litestar, policy: PolicyConfig) -> None:
    from service import schemas
    from service.realtime import schemas as rt_schemas

    openapi = app.openapi_schema
    components = openapi.components.schemas if openapi.components else None
    if not components:
        return
    for name in _closed_structs(schemas, rt_schemas):
        if name in components:
            components[name].additional_properties = False
    context = components.get("Context")
    placement = (context.properties or {}).get("placement") if context is not None else None
    if isinstance(placement, Schema):
        placement.enum = sorted(policy.placements)
        placement.description = "a placement configured in the policy file"
    decide = components.get("DecideRequest")
    if decide is not None:  # who the decision is for: a known customer or a visitor
        decide.any_of = [Schema(required=["customer_id"]), Schema(required=["anonymous_id"])]
