"""`POST /events`: behavioural events in (same API key as /decide)."""

from __future__ import annotations

from litestar import Controller, post
from litestar.datastructures import State
from litestar.params import JSONBody
from redis.exceptions import RedisError

from service.api.body import read_body
from service.errors import Unavailable
from service.realtime.schemas import MAX_EVENTS, EventsRequest, EventsResponse
from service.realtime.service import Realtime
from service.security import api_guard

__all__ = ["EventsController"]


class EventsController(Controller):
    tags = ["events"]  # noqa: RUF012
    guards = [api_guard]  # noqa: RUF012
    before_request = staticmethod(read_body)

    @post(
        "/events",
        status_code=200,
        summary=f"Behavioural events (up to {MAX_EVENTS}): real-time features, identity, triggers",
    )
    async def events(self, data: JSONBody[EventsRequest], state: State) -> EventsResponse:
        """503 (with Retry-After) when the real-time store is unreachable: events are
        idempotent by ``event_id``, so the caller retries the whole batch safely."""
        realtime: Realtime = state.realtime
        try:
            return await realtime.ingest(data)
        except (RedisError, OSError, TimeoutError) as exc:
            raise Unavailable("real-time store unreachable; retry the batch") from exc
