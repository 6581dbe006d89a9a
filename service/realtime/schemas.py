"""Bodies of `POST /events` (msgspec structs, strict like the rest of the API)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from service.schemas import Id, OfferId

__all__ = ["MAX_EVENTS", "EventIn", "EventResult", "EventType", "EventsRequest", "EventsResponse"]

#: the largest batch one request may carry (bounded request size; larger: 400)
MAX_EVENTS = 500

EventType = Literal[
    "page_view", "cart_add", "cart_remove", "purchase", "app_open", "message_open", "identify"
]
Status = Literal["applied", "late", "duplicate", "rejected"]


class EventIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    event_id: Id
    type: EventType
    timestamp: datetime
    customer_id: Id | None = None
    anonymous_id: Id | None = None
    offer_id: OfferId | None = None
    value: Annotated[float, msgspec.Meta(ge=0, le=1e9)] | None = None
    quantity: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 1


class EventsRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    events: Annotated[list[EventIn], msgspec.Meta(min_length=1, max_length=MAX_EVENTS)]


class EventResult(msgspec.Struct, kw_only=True):
    event_id: str
    status: Status
    detail: str = ""


class EventsResponse(msgspec.Struct, kw_only=True):
    applied: int
    late: int
    duplicate: int
    rejected: int
    results: list[EventResult]
