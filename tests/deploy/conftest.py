"""Fixtures for the deployment tests: a local Redis Cluster, PostgreSQL, service processes.

Requirements follow tests/conftest.py: a missing Redis (or `redis-server` binary for the
cluster) skips, unless NEXTBEST_REQUIRE_REDIS=1 (CI), where it fails. PostgreSQL
(NEXTBEST_TEST_POSTGRES_URL, default ``postgresql://postgres@127.0.0.1:5432/postgres``) skips
with a loud reason when none answers, unless NEXTBEST_REQUIRE_POSTGRES=1 (CI), where it fails.
Every process these fixtures start is stopped at teardown, also when a test fails.

The two images of the Dockerfile (``serve``, ``train``) are built once per session by replaying
their build steps (tests/deploy/dockerfile.py) into fresh folders: test_image.py checks and
starts them, and test_mlflow_postgres.py runs its service from the ``serve`` image, so the
registry path is proven with exactly what that image holds (MLflow's client only).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import uuid
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.dockerfile import Emulator, Stage, parse, target
from tests.deploy.processes import Child, free_port, wait_http

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from redis_cluster import LocalCluster  # noqa: E402

API_KEY = "deploy-test-key"
ADMIN_KEY = "deploy-admin-key"
READY_TIMEOUT_S = 180.0  # a cold start on a loaded 2-core machine imports a lot


def tool(name: str) -> str:
    """A command of the test environment (the venv's bin first, then PATH)."""
    found = shutil.which(name, path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    if not found:
        pytest.fail(f"`{name}` not found: run `make setup` (the dev extra installs it)")
    return found


def build_image(name: str, rootfs: Path) -> Iterator[Emulator]:
    """``docker build --target <name>`` replayed into ``rootfs`` (its venv removed afterwards:
    hundreds of MB, and pytest keeps the last three runs' temporary folders)."""
    python = getattr(sys, "_base_executable", sys.executable)
    emu = Emulator(ROOT, rootfs, uv=tool("uv"), python=python)
    extra = {"UV_OFFLINE": "1"}  # no network in tests: uv installs from its cache
    for k in ("HOME", "UV_CACHE_DIR", "XDG_CACHE_HOME", "TMPDIR"):
        if k in os.environ:
            extra[k] = os.environ[k]
    try:
        for stage in target(dockerfile_stages(), name):
            emu.run_stage(stage, extra)
        yield emu
    finally:
        shutil.rmtree(rootfs / "opt", ignore_errors=True)


def dockerfile_stages() -> list[Stage]:
    return parse((ROOT / "Dockerfile").read_text())


@pytest.fixture(scope="session")
def serve_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """The ``serve`` target (the default one: the decision service) built in a fresh folder."""
    yield from build_image("serve", tmp_path_factory.mktemp("image-serve"))


@pytest.fixture(scope="session")
def train_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """The ``train`` target (training job, MLflow server, Locust) built in a fresh folder."""
    yield from build_image("train", tmp_path_factory.mktemp("image-train"))


def _required(var: str) -> bool:
    return os.environ.get(var) == "1"


def missing(what: str, var: str) -> None:
    """Fail when ``var``=1 (CI), else skip with a loud reason."""
    if _required(var):
        pytest.fail(f"{what} ({var}=1)")
    warnings.warn(f"SKIPPING deployment test: {what}", stacklevel=2)
    pytest.skip(f"SKIPPED LOUDLY: {what}")


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A 3-master Redis Cluster of `redis-server` processes on free loopback ports."""
    try:
        cluster = LocalCluster(tmp_path_factory.mktemp("redis-cluster"), masters=3)
    except RuntimeError as exc:
        missing(f"cannot set up a Redis Cluster: {exc}", "NEXTBEST_REQUIRE_REDIS")
    with cluster:
        yield cluster


def postgres_admin_url() -> str:
    return os.environ.get(
        "NEXTBEST_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )


@pytest.fixture(scope="module")
def postgres_db() -> Iterator[str]:
    """A fresh database on the test machine's PostgreSQL server; dropped afterwards."""
    try:
        import psycopg
    except ImportError as exc:
        missing(f"no PostgreSQL driver (psycopg): {exc}", "NEXTBEST_REQUIRE_POSTGRES")
    admin = postgres_admin_url()
    try:
        conn = psycopg.connect(admin, autocommit=True, connect_timeout=5)
    except Exception as exc:
        missing(f"no PostgreSQL answers at {admin}: {exc}", "NEXTBEST_REQUIRE_POSTGRES")
    name = f"nextbest_mlflow_test_{uuid.uuid4().hex[:10]}"
    with conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        try:
            base, _, _ = admin.rpartition("/")
            yield f"{base}/{name}"
        finally:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def base_env() -> dict[str, str]:
    """A clean environment for a child: nothing of the test session's NEXTBEST_*/MLflow."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER", "UV_CACHE_DIR")
    return {k: os.environ[k] for k in keep if k in os.environ}


def service_env(redis_url: str, spool: Path, **extra: str) -> dict[str, str]:
    env = base_env()
    env.update(
        {
            "NEXTBEST_HOST": "127.0.0.1",
            "NEXTBEST_REDIS_URL": redis_url,
            "NEXTBEST_API_KEYS": API_KEY,
            "NEXTBEST_ADMIN_KEYS": ADMIN_KEY,
            "NEXTBEST_SPOOL_DIR": str(spool),
            "NEXTBEST_REDIS_TIMEOUT_MS": "500",
            "NEXTBEST_SCHEDULER_POLL_S": "0.5",
            "NEXTBEST_LOG_LEVEL": "WARNING",
        }
    )
    env.update(extra)
    return env


@contextlib.contextmanager
def service_process(
    env: Mapping[str, str],
    log: Path,
    python: str = sys.executable,
    cwd: Path = ROOT,
    args: list[str] | None = None,
) -> Iterator[tuple[Child, str]]:
    """``python -m service`` (or ``args``) on a free port; yields (child, base URL) when ready."""
    port = free_port()
    full = {**env, "NEXTBEST_PORT": str(port)}
    with Child(args or [python, "-m", "service"], log, env=full, cwd=cwd) as child:
        base = f"http://127.0.0.1:{port}"
        wait_http(child, f"{base}/ready", READY_TIMEOUT_S)
        yield child, base


def world_people(small_world: Path, offset: int) -> dict[str, Any]:
    """Customers of the session's world for one deployment's suite (disjoint by ``offset``)."""
    import pandas as pd

    from service.domain.allocation import allocate
    from service.domain.config import load_policy

    truth = pd.read_parquet(small_world / "truth" / "truth_customers.parquet")
    exp = load_policy().experiments
    known = truth[~truth["anonymous"]].reset_index(drop=True)
    known = known.iloc[offset:].reset_index(drop=True)
    arms = {c: allocate(exp, c).arm for c in known["customer_id"]}
    model = known[[arms[c] == "model" for c in known["customer_id"]]]
    model = model[~model["opted_out"]]
    # local time at the suite's NOW (09:00 UTC) outside push/sms quiet hours (21-8)
    day = model[(model["tz_offset"] >= -1) & (model["tz_offset"] <= 11)]
    return {
        "opted_out": str(known.loc[known["opted_out"], "customer_id"].iloc[0]),
        "holdout": next(c for c, a in arms.items() if a == "holdout"),
        "push": [str(c) for c in day.loc[day["consent_push"], "customer_id"].iloc[:12]],
        "email": [str(c) for c in day.loc[day["consent_email"], "customer_id"].iloc[12:24]],
        "treated": [str(c) for c in model["customer_id"].iloc[30:42]],
        "events": [str(c) for c in model["customer_id"].iloc[50:53]],
        "arms": {c: arms[c] for c in list(arms)[:40]},
    }
