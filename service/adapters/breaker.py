"""Fail fast while Redis is known to be unreachable.

Each Redis call on the request path has a budget (``NEXTBEST_REDIS_TIMEOUT_MS``). Without a
breaker, every request during an outage would spend that budget several times (real-time
read, state read, cap reservation, log append) before falling back. After a failure the
breaker opens for ``cooldown_s``: calls skip Redis at once and take the documented fallback
(priors, no capped channel, log to the local spool). When the cooldown ends the next
requests try Redis again (half-open); one success closes the breaker.
"""

from __future__ import annotations

import time

__all__ = ["Breaker"]


class Breaker:
    def __init__(self, cooldown_s: float = 0.5) -> None:
        self.cooldown_s = cooldown_s
        self._open_until = 0.0
        self.opened = 0  # how many times it opened (for /metrics and tests)

    def allow(self) -> bool:
        """May this call try Redis?"""
        return time.monotonic() >= self._open_until

    @property
    def is_open(self) -> bool:
        return not self.allow()

    def failure(self) -> None:
        if self.allow():
            self.opened += 1
        self._open_until = time.monotonic() + self.cooldown_s

    def success(self) -> None:
        self._open_until = 0.0
