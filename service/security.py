"""API keys, admin keys, per-key rate limits and throttled failed authentication.

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
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from contracts.keys import auth_failures_key, rate_limit_key
from contracts.settings import Settings

__all__ = [
    "KeyRing",
    "Limits",
    "LocalBuckets",
    "RateLimited",
    "admin_guard",
    "api_guard",
    "hash_key",
    "keyring_from_settings",
]


class RateLimited(Exception):
    def __init__(self, retry_after: float, message: str = "rate limit exceeded") -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.message = message


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


class LocalBuckets:
    """Token buckets in this process (the fallback, and ``NEXTBEST_RATE_LIMIT_STORE=local``)."""

    def __init__(self, limit: int = 100_000) -> None:
        self._buckets: dict[str, _Bucket] = {}
        self._limit = limit  # bounded: a flood of new subjects cannot grow it without end

    def take(self, subject: str, rate: float, burst: float) -> float:
        """0 when a token was taken, else the seconds until one is there."""
        now = time.monotonic()
        b = self._buckets.get(subject)
        if b is None:
            if len(self._buckets) >= self._limit:
                self._buckets.clear()
            b = self._buckets[subject] = _Bucket(burst, now)
        b.tokens = min(burst, b.tokens + (now - b.updated) * rate)
        b.updated = now
        if b.tokens < 1.0:
            return (1.0 - b.tokens) / rate
        b.tokens -= 1.0
        return 0.0


# One token bucket per key, on the Redis clock (every worker and replica shares it).
# KEYS[1] bucket hash; ARGV: rate per s, burst. Returns 0 (taken) or seconds to wait (string).
TOKEN_BUCKET_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
if now > ts then tokens = math.min(burst, tokens + (now - ts) * rate) end
local wait = 0
if tokens < 1 then wait = (1 - tokens) / rate else tokens = tokens - 1 end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
           'ts', string.format('%.17g', math.max(now, ts)))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return string.format('%.17g', wait)
"""


class Limits:
    """Per-key request rate and per-client failed-authentication budget.

    With a Redis client the buckets live in Redis (keys from :mod:`contracts.keys`), so a
    key's budget is one budget however many workers and replicas serve it; when Redis does
    not answer within ``guard``'s budget the bucket of this process decides instead (the
    service keeps serving; the limit is then per process until Redis returns).

    A client address that used up its failed-authentication budget gets 429 on every
    request (right key or not, so the answers are no oracle) until the budget refills; the
    block is remembered here, so those requests cost no Redis call.
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: float,
        auth_failures_per_min: float,
        client: Any = None,
        guard: Callable[[Awaitable[Any]], Awaitable[Any]] | None = None,
    ) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.fail_rate = auth_failures_per_min / 60.0
        self.fail_burst = auth_failures_per_min
        self.local = LocalBuckets()
        self._blocked: dict[str, float] = {}
        self._script = client.register_script(TOKEN_BUCKET_LUA) if client is not None else None
        self._guard = guard

    async def _take(self, key: str, rate: float, burst: float) -> float:
        if self._script is not None:
            call = self._script(keys=[key], args=[rate, burst])
            try:
                result = await (self._guard(call) if self._guard is not None else call)
                return float(result.decode() if isinstance(result, bytes) else result)
            except Exception:  # skipped, slow or down: this process's bucket decides
                pass
        return self.local.take(key, rate, burst)

    async def request(self, digest: bytes) -> None:
        """Take one token of this key's budget; raises :class:`RateLimited`."""
        if self.rate_per_s <= 0:
            return
        wait = await self._take(rate_limit_key(digest.decode()), self.rate_per_s, self.burst)
        if wait > 0:
            raise RateLimited(wait)

    def check_client(self, client: str) -> None:
        """429 while this client address is blocked for failed authentications."""
        until = self._blocked.get(client)
        if until is not None:
            left = until - time.monotonic()
            if left > 0:
                raise RateLimited(left, "too many failed authentications from this client")
            del self._blocked[client]

    async def failed(self, client: str) -> None:
        """Count a failed authentication; raises :class:`RateLimited` once over budget."""
        if self.fail_rate <= 0:
            return
        wait = await self._take(auth_failures_key(client), self.fail_rate, self.fail_burst)
        if wait > 0:
            if len(self._blocked) > 100_000:
                self._blocked.clear()
            self._blocked[client] = time.monotonic() + wait
            raise RateLimited(wait, "too many failed authentications from this client")


def _unauthorized() -> NotAuthorizedException:
    return NotAuthorizedException(
        "missing or invalid credentials",
        headers={"WWW-Authenticate": 'Bearer realm="nextbest"'},
    )


@dataclass
class KeyRing:
    api: list[bytes]
    admin: list[bytes]
    rate_per_s: float = 0.0  # 0 = unlimited
    burst: float = 0.0
    auth_failures_per_min: float = 0.0  # 0 = unlimited
    #: the buckets; the app replaces this in its lifespan with one that has Redis
    limits: Limits = field(init=False)

    def __post_init__(self) -> None:
        self.limits = Limits(self.rate_per_s, self.burst, self.auth_failures_per_min)

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

    def identify(self, header: str | None, admin: bool) -> bytes:
        """The digest of a key allowed here; raises 401 (unknown key) or 403 (not admin)."""
        digest = self._digest(header)
        if digest is None:
            raise _unauthorized()
        is_admin = self._match(digest, self.admin)
        if admin:
            if is_admin:
                return digest
            if self._match(digest, self.api):
                raise PermissionDeniedException("not allowed")
            raise _unauthorized()
        if not (is_admin or self._match(digest, self.api)):
            raise _unauthorized()
        return digest

    async def check(self, header: str | None, admin: bool, client: str) -> None:
        """Authenticate (throttling failures per client address), then take a token."""
        if self.open:
            return
        self.limits.check_client(client)
        try:
            digest = self.identify(header, admin)
        except NotAuthorizedException:
            await self.limits.failed(client)
            raise
        if not admin:
            await self.limits.request(digest)


def keyring_from_settings(settings: Settings) -> KeyRing:
    api = _entries(settings.security.api_keys, settings.security.api_keys_file)
    admin = _entries(settings.security.admin_keys, settings.security.admin_keys_file)
    sec = settings.security
    rate = sec.rate_limit_per_s
    burst = sec.rate_limit_burst or max(rate, 1.0) * 2
    ring = KeyRing(
        [a.encode() for a in api], [a.encode() for a in admin], rate, burst,
        sec.auth_failures_per_min,
    )  # fmt: skip
    if ring.open and not settings.security.dev_mode:
        raise RuntimeError(
            "no API key configured: set NEXTBEST_API_KEYS (or NEXTBEST_API_KEYS_FILE), "
            "or NEXTBEST_DEV_MODE=1 to run without authentication on a development machine"
        )
    return ring


# Guards are async on purpose: Litestar runs a sync guard in its thread pool, a thread hop
# on every request (measured: ~10% of a worker's time at saturation). The key check is a hash
# and a comparison on the event loop; a Redis call happens only when a rate limit is set
# (the key's bucket) or a key failed (the client's bucket).
def _client(connection: ASGIConnection) -> str:  # type: ignore[type-arg]
    return connection.client.host if connection.client else "unknown"


async def api_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:  # type: ignore[type-arg]
    await connection.app.state.keyring.check(
        connection.headers.get("authorization"), False, _client(connection)
    )


async def admin_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:  # type: ignore[type-arg]
    await connection.app.state.keyring.check(
        connection.headers.get("authorization"), True, _client(connection)
    )
