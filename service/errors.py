"""Errors the service raises for the HTTP layer to map to a status code (service/api/errors.py).

They carry what the response needs (field, message, retry time) and nothing about HTTP.
"""

from __future__ import annotations

__all__ = ["InvalidBody", "RequestError", "Unavailable", "UnknownDecision"]


class RequestError(Exception):
    """A request the types accepted but the service cannot honour (HTTP 422 by default)."""

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.status = status


class InvalidBody(Exception):
    """A body that is not what the route takes: not JSON, wrong shape or type (HTTP 400), or
    not declared as JSON (HTTP 415)."""

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.status = status


class UnknownDecision(Exception):
    """Feedback for a decision id the service does not know (HTTP 404)."""

    def __init__(self, decision_id: str) -> None:
        super().__init__(decision_id)
        self.decision_id = decision_id


class Unavailable(Exception):
    """A dependency is down and the request cannot be accepted durably: 503, retry later."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s
