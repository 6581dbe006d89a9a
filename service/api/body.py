"""Request bodies: one strict JSON reader for every route that takes a body.

Litestar's default reads any body as untyped JSON and converts it afterwards; this one,
installed as the app's request class, decodes straight into the route's request struct with
a msgspec decoder built once per type, so:

* the Content-Type must be JSON (``application/json`` or ``application/*+json``), else 415;
* an empty body, bytes that are not UTF-8, a lone surrogate, malformed JSON, a value of the
  wrong type or a nesting deeper than the struct are each a 400 naming the field (a typed
  decode stops at the first value that does not fit, so a deep body costs nothing);
* an object with the same key twice is a 400 (JSON leaves it undefined; the service does
  not guess which one the caller meant).

Controllers that take a body set :func:`read_body` as their ``before_request`` hook, so the
checks above run before Litestar's own extraction (which would skip an empty body).
"""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec
from litestar import Request
from litestar.types import Empty

from service.errors import InvalidBody

__all__ = ["ApiRequest", "decode_body", "read_body"]

_DECODERS: dict[Any, msgspec.json.Decoder[Any]] = {}


def _media_type_is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise InvalidBody(key, f"duplicate key {key!r} in a JSON object")
            seen.add(key)
    return out


_PATH = re.compile(r"at `\$\.?([^`]*)`")
_NAMED = re.compile(r"(?:unknown|missing required) field `([^`]*)`")


#: the stdlib decoder, built once, for the one thing msgspec does not report: repeated keys
_PAIRS = json.JSONDecoder(object_pairs_hook=_unique_keys)


def _field(message: str) -> str:
    """The dotted path of the field a msgspec error names (``requests[9].context.placement``).

    msgspec gives the path of the object that failed (``- at `$.context` ``); an unknown or
    missing field is named in the message itself.
    """
    m = _PATH.search(message)
    path = m.group(1) if m else ""
    named = _NAMED.search(message)
    if named:
        path = f"{path}.{named.group(1)}" if path else named.group(1)
    return path or "body"


def decode_body(body: bytes, content_type: str, type_: Any) -> Any:
    """``body`` as an instance of ``type_``; raises :class:`InvalidBody` (400/415)."""
    if not _media_type_is_json(content_type):
        raise InvalidBody(
            "body",
            f"Content-Type must be application/json, not {content_type or 'missing'!r}",
            status=415,
        )
    if not body.strip():
        raise InvalidBody("body", "the request body is empty: send a JSON object")
    decoder = _DECODERS.get(type_)
    if decoder is None:
        decoder = _DECODERS[type_] = msgspec.json.Decoder(type_)
    try:
        value = decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise InvalidBody(_field(str(exc)), str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise InvalidBody("body", f"not valid JSON: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise InvalidBody("body", f"not valid UTF-8 at byte {exc.start}") from exc
    except (RecursionError, ValueError) as exc:  # anything else the decoder refuses
        raise InvalidBody("body", f"not a valid body: {type(exc).__name__}") from exc
    # valid UTF-8 and bounded by the type now: a second, cheap pass only to see repeated keys
    _PAIRS.decode(body.decode())
    return value


class ApiRequest(Request[Any, Any, Any]):
    """The app's request class: ``json()`` decodes strictly into the route's body type."""

    async def json(self) -> Any:
        if self._json is Empty:
            field = self.route_handler.parsed_data_field
            type_ = field.annotation if field is not None else Any
            body = await self.body()
            self._json = decode_body(body, self.headers.get("content-type", ""), type_)
        return self._json


async def read_body(request: Request[Any, Any, Any]) -> None:
    """``before_request`` hook of controllers with a body: decode (and check) it first."""
    await request.json()
