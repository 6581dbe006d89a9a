"""Bodies of `POST /events` (msgspec structs, strict like the rest of the API)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from service.schemas import Id, Instant, OfferId

__all__ = ["MAX_EVENTS", "EventIn", "EventResult", "EventType", "EventsRequest", "EventsResponse"]

#: the largest batch one request may carry (bounded request size; larger: 400)
MAX_EVENTS = 500

EventType = Literal[
    "page_view", "cart_add", "cart_remove", "purchase", "app_open", "message_open", "identify"
]
#: ``skipped``: the customer opted out, so nothing of the event is kept (no behavioural data
#: of an opted-out customer is collected)
Status = Literal["applied", "late", "duplicate", "rejected", "skipped"]


class EventIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One behavioural event; an event is refused (``rejected``) alone, not its batch."""

    event_id: Annotated[Id, msgspec.Meta(description="unique per event: a repeat is a duplicate")]
    type: Annotated[EventType, msgspec.Meta(description="what the person did")]
    timestamp: Annotated[
        Instant,
        msgspec.Meta(
            description="when it happened, with its UTC offset; events older than the "
            "7-day idempotency window or more than 5 minutes ahead are rejected",
            examples=["2026-11-16T09:00:00Z"],
        ),
    ]
    customer_id: Annotated[Id, msgspec.Meta(description="a known customer")] | None = None
    anonymous_id: (
        Annotated[Id, msgspec.Meta(description="a visitor (identify links it to a customer)")]
        | None
    ) = None
    offer_id: (
        Annotated[OfferId, msgspec.Meta(description="the offer (cart and purchase events)")] | None
    ) = None
    value: (
        Annotated[float, msgspec.Meta(ge=0, le=1e9, description="the offer's value (cart_add)")]
        | None
    ) = None
    category: (
        Annotated[
            str,
            msgspec.Meta(
                min_length=1,
                max_length=64,
                description="the item's category (cart_add): an abandoned-cart reminder of an "
                "item that is not an offer offers its category",
                examples=["home"],
            ),
        ]
        | None
    ) = None
    #: a JSON Schema integer is any number without a fraction (``2`` or ``2.0``): decoded as
    #: such a number, used as an int (``EventIn.count``)
    quantity: Annotated[
        float,
        msgspec.Meta(
            ge=1,
            le=1000,
            multiple_of=1,
            extra_json_schema={"type": "integer"},
            description="items added or removed",
        ),
    ] = 1

    @property
    def count(self) -> int:
        return int(self.quantity)


class EventsRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A batch of events, applied in timestamp order; each event is answered on its own."""

    events: Annotated[
        list[EventIn],
        msgspec.Meta(min_length=1, max_length=MAX_EVENTS, description="the events"),
    ]


class EventResult(msgspec.Struct, kw_only=True):
    event_id: str
    status: Status
    detail: str = ""


class EventsResponse(msgspec.Struct, kw_only=True):
    applied: int
    late: int
    duplicate: int
    rejected: int
    skipped: int
    results: list[EventResult]
