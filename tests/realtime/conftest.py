"""Fixtures for the real-time tests: a real Redis (``redis_url``), unique ids, the app.

Decision-dependent tests ask for ``bundle``: the session's ``model_bundle`` (tests/conftest.py);
everything else runs without models.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient

from contracts.settings import Settings
from service.app import create_app
from service.realtime.sequences import LEASES, TIMERS
from tests.support import make_settings

API_KEY = "rt-test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def bundle(model_bundle: Path) -> Path:
    return model_bundle


@pytest.fixture
def uid() -> str:
    """A unique id prefix: tests share one Redis database."""
    return f"RT{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def r(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def clean_timers(r: aioredis.Redis) -> None:
    await r.delete(TIMERS, LEASES)


def settings_for(redis_url: str, models_dir: Path, spool: Path, **env: Any) -> Settings:
    """``env``: more NEXTBEST_* variables (or overrides)."""
    base: dict[str, object] = {
        "NEXTBEST_REDIS_URL": redis_url,
        "NEXTBEST_MODELS_DIR": models_dir,
        "NEXTBEST_API_KEYS": API_KEY,
        "NEXTBEST_SPOOL_DIR": spool,
        "NEXTBEST_MODEL_POLL_S": 0,
        "NEXTBEST_SCHEDULER_POLL_S": 0,
        "NEXTBEST_REDIS_TIMEOUT_MS": 500,
    }
    return make_settings(**{**base, **env})


@pytest.fixture
async def client_nomodels(redis_url: str, tmp_path: Path) -> AsyncIterator[AsyncTestClient[Any]]:
    """The app without a model bundle (events, identity, logs: no model needed)."""
    s = settings_for(redis_url, tmp_path / "no-models", tmp_path / "spool")
    async with AsyncTestClient(app=create_app(s)) as c:
        yield c


def ts_iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e6):06d}Z"


@pytest.fixture
async def client_models(
    redis_url: str, bundle: Path, tmp_path: Path, redis_store: Any
) -> AsyncIterator[AsyncTestClient[Any]]:
    """The app with the session's model bundle and the feature store materialized in Redis."""
    async with AsyncTestClient(app=create_app(settings_for(redis_url, bundle, tmp_path))) as c:
        yield c
