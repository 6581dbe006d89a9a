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

#: the Redis database the suite flushes and uses (never the service's db 0); parallel runs
#: on one Redis each take their own with NEXTBEST_TEST_REDIS_DB
TEST_DB = int(os.environ.get("NEXTBEST_TEST_REDIS_DB", "9"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With NEXTBEST_NO_SKIPS=1 (CI sets it) a skipped test fails the run: in CI every
    test has what it needs (Redis, PostgreSQL, redis-server), so a skip means a test that
    silently did not run."""
    if os.environ.get("NEXTBEST_NO_SKIPS") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped:
        for rep in skipped:
            print(f"\nNEXTBEST_NO_SKIPS: {rep.nodeid} was skipped: {rep.longrepr}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


SMALL_WORLD_CUSTOMERS = 3000


def _with_db(url: str, db: int) -> str:
    base = url.split("?")[0].rstrip("/")
    head, _, last = base.rpartition("/")
    if last.isdigit() and head.count("/") >= 2:
        base = head
    return f"{base}/{db}"


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (``pytest.mark.anyio``) run on asyncio, as the service does."""
    return "asyncio"


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
    """A 3,000-customer world generated once per session and taken through ingest and
    features (the path of every data set); returns its data folder."""
    from training.datasets.world import WorldConfig, build_world

    out = var_dir / "world"
    build_world(WorldConfig(n_customers=SMALL_WORLD_CUSTOMERS, seed=7), out)
    return out


@pytest.fixture(scope="session")
def sqlite_store(small_world: Path):  # type: ignore[no-untyped-def]
    """The Feast repository applied and materialized into the embedded SQLite store."""
    from training.datasets.world import World
    from training.pipeline.featurestore import apply, materialize

    apply("sqlite")
    return materialize("sqlite", end=World.load(small_world).config.end_ts)


@pytest.fixture(scope="session")
def redis_store(small_world: Path, redis_url: str):  # type: ignore[no-untyped-def]
    """The Feast repository materialized into the test Redis database."""
    from training.datasets.world import World
    from training.pipeline.featurestore import apply, materialize

    apply("redis", redis_url)
    return materialize("redis", redis_url, end=World.load(small_world).config.end_ts)


@pytest.fixture(scope="session")
def trained(sqlite_store):  # type: ignore[no-untyped-def]
    """The real ``train`` stage, run once per session on the small world (a TrainResult)."""
    from training.pipeline.train import train

    return train(progress=False)


@pytest.fixture(scope="session")
def model_bundle(trained, var_dir: Path) -> Path:  # type: ignore[no-untyped-def]
    """A real model bundle exported from the session's trained models.

    The fixture names this run's versions champion directly (the promotion gates are tested
    on their own in tests/training/test_gates.py; a 3,000-customer world is too small to pass
    them reliably).
    """
    from training.pipeline.bundle import export_bundle
    from training.pipeline.registry import CHAMPION, REGISTERED_NAMES, client

    c = client()
    for kind, name in REGISTERED_NAMES.items():
        c.set_registered_model_alias(name, CHAMPION, trained.versions[kind])
    out = var_dir / "bundle"
    export_bundle(out)
    return out
