"""Every Redis call of a request runs through one guard: a time budget and a circuit breaker."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from service.adapters.breaker import Breaker

__all__ = ["RedisGuard", "RedisSkipped"]

T = TypeVar("T")


class RedisSkipped(Exception):
    """The breaker is open: Redis was not tried (it failed moments ago)."""


class RedisGuard:
    def __init__(self, timeout_s: float, breaker: Breaker | None = None) -> None:
        self.timeout = timeout_s
        #: open while Redis is known to be down: calls skip it and take the fallback at once
        self.breaker = breaker or Breaker()

    async def call(self, call: Awaitable[T]) -> T:
        """Run one Redis call within the budget; feed the breaker. Raises when skipped/failed."""
        if not self.breaker.allow():
            if asyncio.iscoroutine(call):
                call.close()  # never awaited: skip it without a "never awaited" warning
            raise RedisSkipped
        try:
            result = await asyncio.wait_for(call, self.timeout)
        except Exception:  # timeout, connection refused, reset, ...
            self.breaker.failure()
            raise
        self.breaker.success()
        return result
