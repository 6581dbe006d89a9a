"""Shared fixtures: a real Redis, and a small generated world with its feature store.

Redis: NEXTBEST_TEST_REDIS_URL (`make test` and .ci/run set it, starting a redis-server if
none answers). Tests use their own database index so they never touch demo data. Without a
reachable Redis the Redis tests skip, unless NEXTBEST_REQUIRE_REDIS=1 (CI), where they fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

TEST_DB = 9
SMALL_WORLD_CUSTOMERS = 3000


def _with_db(url: str, db: int) -> str:
    base = url.split("?")[0].rstrip("/")
    head, _, last = base.rpartition("/")
    if last.isdigit() and head.count("/") >= 2:
        base = head
    return f"{base}/{db}"


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    raw = os.environ.get("NEXTBEST_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    url = _with_db(raw, TEST_DB)
    try:
        client = redis.Redis.from_url(url, socket_timeout=2)
        client.ping()
    except Exception as exc:
        if os.environ.get("NEXTBEST_REQUIRE_REDIS") == "1":
            pytest.fail(f"Redis required (NEXTBEST_REQUIRE_REDIS=1) but {url} fails: {exc}")
        pytest.skip(f"no Redis at {url}: {exc}")
    client.flushdb()
    return url


@pytest.fixture(scope="session")
def var_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """NEXTBEST_VAR_DIR for the whole session (data, Feast registry, MLflow)."""
    path = tmp_path_factory.mktemp("var")
    old = {
        k: os.environ.get(k)
        for k in ("NEXTBEST_VAR_DIR", "NEXTBEST_DATA_DIR", "MLFLOW_TRACKING_URI")
    }
    os.environ["NEXTBEST_VAR_DIR"] = str(path)
    os.environ.pop("NEXTBEST_DATA_DIR", None)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{path}/mlflow/mlflow.db"
    (path / "mlflow").mkdir()
    yield path
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def small_world(var_dir: Path) -> Path:
    """A 3,000-customer world generated once per session; returns its data folder."""
    from training.world import WorldConfig, generate_world

    out = var_dir / "world"
    generate_world(WorldConfig(n_customers=SMALL_WORLD_CUSTOMERS, seed=7), out)
    return out


@pytest.fixture(scope="session")
def sqlite_store(small_world: Path):  # type: ignore[no-untyped-def]
    """The Feast repository applied and materialized into the embedded SQLite store."""
    from training.featurestore import apply, materialize
    from training.world import World

    apply("sqlite")
    return materialize("sqlite", end=World.load(small_world).config.end_ts)


@pytest.fixture(scope="session")
def redis_store(small_world: Path, redis_url: str):  # type: ignore[no-untyped-def]
    """The Feast repository materialized into the test Redis database."""
    from training.featurestore import apply, materialize
    from training.world import World

    apply("redis", redis_url)
    return materialize("redis", redis_url, end=World.load(small_world).config.end_ts)
