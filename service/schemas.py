"""Request and response bodies of the HTTP API (msgspec structs, strict).

Requests reject unknown fields and wrong types; limits (lengths, ranges) are part of the
types, so the OpenAPI schema says what the service accepts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

__all__ = [
    "ActionOut",
    "BatchRequest",
    "BatchResponse",
    "Context",
    "DecideRequest",
    "DecideResponse",
    "ErrorBody",
    "ExperimentRef",
    "FeedbackRequest",
    "FeedbackResponse",
]

#: a channel name (the deployment's channels come from its vocabulary; the engine checks them)
Channel = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,31}$", max_length=32)]
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@\-]+$")]
OfferId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
MAX_CANDIDATES = 100
MAX_BATCH = 1000


class _In(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class Context(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    placement: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    device: Annotated[str, msgspec.Meta(max_length=32)] | None = None
    timezone: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    trigger: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    cart_items: Annotated[list[OfferId], msgspec.Meta(max_length=100)] = []


class ExperimentRef(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    arm: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None


class DecideRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    context: Context
    customer_id: Id | None = None
    anonymous_id: Id | None = None
    candidates: (
        Annotated[list[OfferId], msgspec.Meta(min_length=1, max_length=MAX_CANDIDATES)] | None
    ) = None
    channels: Annotated[list[Channel], msgspec.Meta(min_length=1, max_length=32)] | None = None
    experiment: ExperimentRef | None = None
    now: datetime | None = None
    explain: bool = False


class BatchRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    requests: Annotated[list[DecideRequest], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


class FeedbackRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    decision_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    event: Literal["delivered", "opened", "clicked", "converted", "dismissed"]
    value: Annotated[float, msgspec.Meta(ge=0, le=1e9)] | None = None
    timestamp: datetime | None = None


class _Out(msgspec.Struct, kw_only=True, omit_defaults=False):
    pass


class ActionOut(_Out):
    offer_id: str
    offer_name: str
    channel: str
    send_at: str  # ISO 8601 with the customer's UTC offset
    send_now: bool
    expected_value: float
    probability: float  # expected conversion probability of this action
    propensity: float  # P(convert | opened) from the propensity model (or prior)
    channel_score: float
    hour_lift: float


class SuppressedOut(_Out):
    reason: str
    offer_id: str | None = None
    channel: str | None = None
    detail: str = ""


class DecideResponse(_Out):
    decision_id: str
    action: ActionOut | None
    alternatives: list[ActionOut]
    suppressed: list[SuppressedOut]
    experiment: str | None
    arm: str
    holdout: bool
    policy: str
    choice_probability: float
    cold_start: bool
    degraded: list[str]
    model_versions: dict[str, str]
    policy_version: str
    feature_age_seconds: float | None
    explain: dict[str, object] | None = None


class BatchResponse(_Out):
    decisions: list[DecideResponse]


class FeedbackResponse(_Out):
    decision_id: str
    event: str
    #: accepted: in the log; duplicate: this (decision, event) was already there; spooled:
    #: Redis is unreachable, the outcome is durable on local disk and is appended (once)
    #: when Redis returns, the decision id being checked then
    status: Literal["accepted", "duplicate", "spooled"]


class ErrorBody(_Out):
    error: str
    message: str
    field: str | None = None
