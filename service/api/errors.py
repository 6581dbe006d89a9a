"""Exceptions -> HTTP responses: every error is an :class:`ErrorBody` naming the field.

| status | ``error`` | when |
|---|---|---|
| 400 | ``invalid_request`` | the body is empty, not UTF-8, not valid JSON, repeats a key, or does not match the schema (``field`` names the first offending field) |
| 401 | ``unauthorized`` | missing or unknown API key (``WWW-Authenticate: Bearer``) |
| 403 | ``forbidden`` | the key may not use this route |
| 404 | ``unknown_decision`` / ``not_found`` | feedback for an unknown decision id / no such route |
| 405 | ``method_not_allowed`` | wrong method for the route (``Allow`` lists the right ones) |
| 413 | ``body_too_large`` | body above ``NEXTBEST_MAX_BODY_BYTES`` |
| 415 | ``unsupported_media_type`` | a body whose Content-Type is not JSON |
| 422 | ``unprocessable_request`` | valid shape, but not honourable (unknown placement, offer, time zone, ...) |
| 429 | ``rate_limited`` | over the key's rate, or too many failed authentications from this client (``Retry-After``) |
| 503 | ``unavailable`` | a dependency is down and the request cannot be accepted durably (``Retry-After``) |
| 500 | ``internal_error`` | a bug: logged with its type and place, never its message |
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from service.errors import InvalidBody, RequestError, Unavailable, UnknownDecision
from service.schemas import ErrorBody
from service.security import RateLimited

__all__ = ["ERRORS", "EXCEPTION_HANDLERS", "field_of"]

log = logging.getLogger("nextbest.api")
_PATH = re.compile(r"at `\$\.?([^`]*)`")
_NAMED = re.compile(r"(?:unknown|missing required) field `([^`]*)`")


#: status -> ``error`` code of the statuses an HTTPException (Litestar's own) may carry
ERRORS = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "unprocessable_request",
    429: "rate_limited",
    503: "unavailable",
}


def _error(
    status: int,
    error: str,
    message: str,
    field: str | None,
    headers: dict[str, str] | None = None,
) -> Response[ErrorBody]:
    return Response(
        ErrorBody(error=error, message=message, field=field), status_code=status, headers=headers
    )


def field_of(item: dict[str, Any]) -> str:
    """The dotted path of the offending field, from one item of Litestar's error list.

    Litestar reports the path of the object that failed (``data`` for the body itself,
    ``context`` for a nested object); an unknown or missing field is named in the message.
    """
    msg = str(item.get("message", ""))
    key = str(item.get("key") or "")
    key = "" if key in ("data", "body") else key
    m = _PATH.search(msg)
    if m and m.group(1):
        key = f"{key}.{m.group(1)}" if key else m.group(1)
    named = _NAMED.search(msg)
    if named:
        return f"{key}.{named.group(1)}" if key else named.group(1)
    return key or "body"


def _validation(_: Request[Any, Any, Any], exc: ValidationException) -> Response[ErrorBody]:
    items = [i for i in (exc.extra or []) if isinstance(i, dict)]
    message = "; ".join(str(i.get("message", "")) for i in items) or str(exc.detail)
    field = field_of(items[0]) if items else "body"
    return _error(400, "invalid_request", message, field)


def _invalid_body(_: Request[Any, Any, Any], exc: InvalidBody) -> Response[ErrorBody]:
    return _error(exc.status, ERRORS[exc.status], exc.message, exc.field)


def _request_error(_: Request[Any, Any, Any], exc: RequestError) -> Response[ErrorBody]:
    return _error(exc.status, "unprocessable_request", exc.message, exc.field)


def _unknown_decision(_: Request[Any, Any, Any], exc: UnknownDecision) -> Response[ErrorBody]:
    return _error(404, "unknown_decision", f"no decision {exc.decision_id!r}", "decision_id")


def _http(_: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorBody]:
    """Litestar's own errors, with their headers (``Allow`` on 405, ``WWW-Authenticate``)."""
    status = exc.status_code
    field = "body" if status in (400, 413) else None  # 400: bad content-length, ...
    return _error(status, ERRORS.get(status, "http_error"), str(exc.detail), field, exc.headers)


def _rate_limited(_: Request[Any, Any, Any], exc: RateLimited) -> Response[ErrorBody]:
    retry = str(max(1, math.ceil(exc.retry_after)))
    return _error(429, "rate_limited", exc.message, None, {"Retry-After": retry})


def _unavailable(_: Request[Any, Any, Any], exc: Unavailable) -> Response[ErrorBody]:
    resp = _error(503, "unavailable", exc.message, None)
    resp.headers["Retry-After"] = str(exc.retry_after_s)
    return resp


def _internal(_: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    log.exception("unhandled error: %s", type(exc).__name__)
    return _error(HTTP_500_INTERNAL_SERVER_ERROR, "internal_error", "internal error", None)


#: exception type -> handler, for ``Litestar(exception_handlers=...)``
EXCEPTION_HANDLERS: dict[type[Exception], Callable[..., Response[ErrorBody]]] = {
    ValidationException: _validation,
    InvalidBody: _invalid_body,
    RequestError: _request_error,
    UnknownDecision: _unknown_decision,
    HTTPException: _http,
    RateLimited: _rate_limited,
    Unavailable: _unavailable,
    Exception: _internal,
}
