"""Errors the HTTP layer maps to a status code (see the handlers in service/app.py)."""

from __future__ import annotations

__all__ = ["Unavailable"]


class Unavailable(Exception):
    """A dependency is down and the request cannot be accepted durably: 503, retry later."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s
