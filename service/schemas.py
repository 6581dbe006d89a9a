"""Request and response bodies of the HTTP API (msgspec structs, strict).

Requests reject unknown fields and wrong types; limits (lengths, ranges) are part of the
types, so the OpenAPI schema says what the service accepts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import available_timezones

import msgspec

__all__ = [
    "NOW_YEARS",
    "TIMEZONES",
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
    "Readiness",
    "ReminderOut",
]

# Patterns end in ``$(?!\n)``: the end of the string in Python's regex (msgspec) as in JSON
# Schema's; a bare ``$`` lets Python accept one trailing newline that the schema refuses.

#: a channel name (the deployment's channels come from its vocabulary; the engine checks them)
Channel = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[a-z][a-z0-9_]{0,31}$(?!\n)",
        max_length=32,
        description="a channel of the deployment's vocabulary",
        examples=["email"],
    ),
]
Id = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_.:@\-]+$(?!\n)",
        description="an identifier: letters, digits and _ . : @ -",
        examples=["C0000042"],
    ),
]
OfferId = Annotated[
    str, msgspec.Meta(min_length=1, max_length=64, description="an offer id", examples=["OFF001"])
]
#: what the decoder accepts of RFC 3339: a UTC offset, no leap second, no year 0000
_HH_MM = r"([01][0-9]|2[0-3]):[0-5][0-9]"
_AFTER_YEAR = (
    r"-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt]"
    + _HH_MM
    + r":[0-5][0-9](\.[0-9]+)?([Zz]|[+-]"
    + _HH_MM
    + r")$"
)
INSTANT_PATTERN = r"^(?!0000)[0-9]{4}" + _AFTER_YEAR
#: ``now``: as :data:`INSTANT_PATTERN`, in the years :data:`NOW_YEARS` (20xx)
NOW_PATTERN = r"^20[0-9]{2}" + _AFTER_YEAR
#: an instant with its UTC offset (RFC 3339); a time without one is refused (400)
Instant = Annotated[datetime, msgspec.Meta(tz=True, extra_json_schema={"pattern": INSTANT_PATTERN})]
MAX_CANDIDATES = 100
MAX_BATCH = 1000
#: ``now`` may move a decision in time, within these years (as written, in its own offset;
#: decision ids count milliseconds since 1970, quiet-hour arithmetic needs the days around)
NOW_YEARS = (2000, 2099)
#: the IANA time zone names a request may name (the tz database of this installation)
TIMEZONES: frozenset[str] = frozenset(available_timezones())


class Context(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where and how the decision is shown."""

    placement: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=64,
            description="a placement configured in the policy file",
            examples=["home_banner"],
        ),
    ]
    device: (
        Annotated[str, msgspec.Meta(max_length=32, description="the caller's device")] | None
    ) = None
    timezone: (
        Annotated[
            str,
            msgspec.Meta(
                max_length=64,
                description="the customer's IANA time zone (wins over the profile's UTC offset)",
                examples=["Europe/Berlin"],
            ),
        ]
        | None
    ) = None
    trigger: (
        Annotated[str, msgspec.Meta(max_length=64, description="what triggered the request")] | None
    ) = None
    cart_items: Annotated[
        list[OfferId],
        msgspec.Meta(max_length=100, description="offers in the session's cart (unknown ignored)"),
    ] = []
    remind: (
        Annotated[
            Literal["cart"],
            msgspec.Meta(
                description="`cart`: remind of the open cart: choose only among the offers in "
                "it, or, for a carted item that is not an offer, the offers of its category "
                "(the response's `reminder` says which); nothing in the cart: no action"
            ),
        ]
        | None
    ) = None


class ExperimentRef(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The experiment (default: the policy's) and, when the caller allocated, the arm."""

    name: (
        Annotated[
            str,
            msgspec.Meta(min_length=1, max_length=64, description="a configured experiment"),
        ]
        | None
    ) = None
    arm: (
        Annotated[
            str,
            msgspec.Meta(min_length=1, max_length=64, description="an arm of it, or holdout"),
        ]
        | None
    ) = None


class DecideRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One decision: for a known customer (``customer_id``) or a visitor (``anonymous_id``)."""

    context: Context
    customer_id: Annotated[Id, msgspec.Meta(description="a known customer")] | None = None
    anonymous_id: (
        Annotated[Id, msgspec.Meta(description="a visitor without a customer id")] | None
    ) = None
    candidates: (
        Annotated[
            list[OfferId],
            msgspec.Meta(
                min_length=1,
                max_length=MAX_CANDIDATES,
                description="offers to choose from (default: the whole catalogue); no repeats",
            ),
        ]
        | None
    ) = None
    channels: (
        Annotated[
            list[Channel],
            msgspec.Meta(
                min_length=1,
                max_length=32,
                description="channels the caller can deliver on (default: the placement's)",
            ),
        ]
        | None
    ) = None
    experiment: ExperimentRef | None = None
    now: (
        Annotated[
            Instant,
            msgspec.Meta(
                extra_json_schema={"pattern": NOW_PATTERN},
                description="decide as of this instant (default: the server's clock); "
                f"in the years {NOW_YEARS[0]} to {NOW_YEARS[1]}",
                examples=["2026-11-16T09:00:00Z"],
            ),
        ]
        | None
    ) = None
    explain: Annotated[
        bool, msgspec.Meta(description="add model scores and the real-time view")
    ] = False


class BatchRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Up to 1,000 decisions, all or nothing: one refused request refuses the batch."""

    requests: Annotated[
        list[DecideRequest],
        msgspec.Meta(min_length=1, max_length=MAX_BATCH, description="the decisions to make"),
    ]


class FeedbackRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An outcome of a decision (idempotent per decision and event)."""

    decision_id: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=64,
            description="the decision_id /decide returned",
            examples=["019a6f3c2b1e4d5c6b7a8f9e0d1c"],
        ),
    ]
    event: Annotated[
        Literal["delivered", "opened", "clicked", "converted", "dismissed"],
        msgspec.Meta(description="what happened to the decision's action"),
    ]
    value: (
        Annotated[float, msgspec.Meta(ge=0, le=1e9, description="order value of a conversion")]
        | None
    ) = None
    timestamp: (
        Annotated[Instant, msgspec.Meta(description="when it happened (default: now)")] | None
    ) = None


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


class ReminderOut(_Out):
    """What a reminder (``context.remind``) reminds of: the carted item itself, or its
    category when the item is not an offer."""

    kind: Annotated[
        Literal["item", "category"],
        msgspec.Meta(
            description="`item`: the action's offer is the carted item; `category`: the carted "
            "item is not an offer, the action's offer is of its category"
        ),
    ]
    item_id: Annotated[str, msgspec.Meta(description="the carted item reminded of")]
    category: Annotated[str, msgspec.Meta(description="the carted item's category")]


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
    explain: dict[str, Any] | None = None
    #: with ``context.remind``: what the action reminds of (None: no action, or no reminder)
    reminder: ReminderOut | None = None


class BatchResponse(_Out):
    decisions: list[DecideResponse]


class FeedbackResponse(_Out):
    decision_id: str
    event: str
    #: accepted: in the log; duplicate: this (decision, event) was already there; spooled:
    #: Redis is unreachable, the outcome is durable on local disk and is appended (once)
    #: when Redis returns, the decision id being checked then
    status: Literal["accepted", "duplicate", "spooled"]


class Readiness(_Out):
    """``GET /ready``: 200 when ready, 503 with the problems otherwise."""

    ready: bool
    problems: list[str]


class ErrorBody(_Out):
    """Every error answer (4xx, 5xx)."""

    error: Annotated[str, msgspec.Meta(description="a stable code", examples=["invalid_request"])]
    message: Annotated[str, msgspec.Meta(description="what is wrong, for a person")]
    field: (
        Annotated[str, msgspec.Meta(description="the offending field's path", examples=["now"])]
        | None
    ) = None
