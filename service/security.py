"""API keys, admin keys and per-key rate limits.

Keys are never held in clear: each configured key is kept as its SHA-256 digest and a
presented key is hashed and compared in constant time. Configure them as
``NEXTBEST_API_KEYS`` / ``NEXTBEST_ADMIN_KEYS`` (comma-separated; each entry a plain key or
``sha256:<hex digest>``) or ``*_FILE`` variables naming a file with one entry per line.
Clients send ``Authorization: Bearer <key>``. Errors never say which part failed.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from contracts.settings import Settings

__all__ = [
    "KeyRing",
    "RateLimited",
    "admin_guard",
    "api_guard",
    "hash_key",
    "keyring_from_settings",
]


class RateLimited(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__("rate limit exceeded")
        self.retry_after = retry_after


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _entries(value: str | None, file: str | None) -> list[str]:
    out = [e.strip() for e in (value or "").split(",") if e.strip()]
    if file:
        out += [
            ln.strip()
            for ln in Path(file).read_text().splitlines()
            if ln.strip() and not ln.startswith("#")
        ]
    return [e.removeprefix("sha256:") if e.startswith("sha256:") else hash_key(e) for e in out]


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class KeyRing:
    api: list[bytes]
    admin: list[bytes]
    rate_per_s: float = 0.0  # 0 = unlimited
    burst: float = 0.0
    _buckets: dict[bytes, _Bucket] = field(default_factory=dict)

    @property
    def open(self) -> bool:
        """No key configured at all (only allowed in development mode)."""
        return not self.api and not self.admin

    @staticmethod
    def _match(digest: bytes, known: Iterable[bytes]) -> bool:
        found = False
        for k in known:  # check every key: time does not depend on which one matched
            found |= hmac.compare_digest(digest, k)
        return found

    def _digest(self, header: str | None) -> bytes | None:
        if not header or not header.startswith("Bearer "):
            return None
        return hashlib.sha256(header[7:].strip().encode()).hexdigest().encode()

    def check(self, header: str | None, admin: bool) -> None:
        if self.open:
            return
        digest = self._digest(header)
        if digest is None:
            raise NotAuthorizedException("missing or invalid credentials")
        is_admin = self._match(digest, self.admin)
        if admin:
            if is_admin:
                return
            if self._match(digest, self.api):
                raise PermissionDeniedException("not allowed")
            raise NotAuthorizedException("missing or invalid credentials")
        if not (is_admin or self._match(digest, self.api)):
            raise NotAuthorizedException("missing or invalid credentials")
        self._rate(digest)

    def _rate(self, digest: bytes) -> None:
        if self.rate_per_s <= 0:
            return
        now = time.monotonic()
        b = self._buckets.get(digest)
        if b is None:
            b = self._buckets[digest] = _Bucket(self.burst, now)
        b.tokens = min(self.burst, b.tokens + (now - b.updated) * self.rate_per_s)
        b.updated = now
        if b.tokens < 1.0:
            raise RateLimited((1.0 - b.tokens) / self.rate_per_s)
        b.tokens -= 1.0


def keyring_from_settings(settings: Settings) -> KeyRing:
    api = _entries(settings.security.api_keys, settings.security.api_keys_file)
    admin = _entries(settings.security.admin_keys, settings.security.admin_keys_file)
    rate = settings.security.rate_limit_per_s
    burst = settings.security.rate_limit_burst or max(rate, 1.0) * 2
    ring = KeyRing([a.encode() for a in api], [a.encode() for a in admin], rate, burst)
    if ring.open and not settings.security.dev_mode:
        raise RuntimeError(
            "no API key configured: set NEXTBEST_API_KEYS (or NEXTBEST_API_KEYS_FILE), "
            "or NEXTBEST_DEV_MODE=1 to run without authentication on a development machine"
        )
    return ring


# Guards are async on purpose: Litestar runs a sync guard in its thread pool, a thread hop
# on every request (measured: ~10% of a worker's time at saturation). The check is a hash
# and a dict lookup, so it runs on the event loop (which also keeps the rate-limit buckets
# on one thread).
async def api_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:  # type: ignore[type-arg]
    connection.app.state.keyring.check(connection.headers.get("authorization"), admin=False)


async def admin_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:  # type: ignore[type-arg]
    connection.app.state.keyring.check(connection.headers.get("authorization"), admin=True)
