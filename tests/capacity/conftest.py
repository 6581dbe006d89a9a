"""Fixtures for the capacity tests: a redis-server of their own (``noeviction`` and memory
limits are set per test, so not the shared test Redis)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtests.faults import RedisProcess


@pytest.fixture
def rp(tmp_path: Path) -> Iterator[RedisProcess]:
    proc = RedisProcess(tmp_path / "redis")
    proc.dir.mkdir()
    proc.start()
    try:
        yield proc
    finally:
        proc.kill()
