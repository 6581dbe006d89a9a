"""Stateless replicas: two service processes on one Redis pass the decision suite together.

Replica A runs two uvicorn workers (NEXTBEST_WORKERS=2), replica B one: three server processes,
each with its own scheduler, behind a round-robin "load balancer". Caps, allocation,
feedback idempotency, identity and sequence steps must hold across them, because all their
state is in Redis.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.adapters.redis_store import sync_client
from tests.deploy.conftest import service_env, service_process, world_people
from tests.deploy.decision_suite import CHECKS, Check, Deployment

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.anyio]


@pytest.fixture(scope="module")
def deployment(
    redis_url: str,
    redis_store: Any,
    model_bundle: Path,
    small_world: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("replicas")
    r = sync_client(redis_url)
    with contextlib.ExitStack() as stack:
        bases = []
        for name, workers in (("a", "2"), ("b", "1")):
            env = service_env(
                redis_url,
                tmp / f"spool-{name}",
                NEXTBEST_MODELS_DIR=str(model_bundle),
                NEXTBEST_WORKERS=workers,
            )
            _, base = stack.enter_context(service_process(env, tmp / f"replica-{name}.log"))
            bases.append(base)
        yield Deployment("two-replicas", bases, r, world_people(small_world, 200))
    r.close()


def test_replica_a_answers_from_two_worker_processes(deployment: Deployment) -> None:
    """Several workers: one port, two processes (each has its own metrics registry, created at
    its own start: ``nextbest_degraded_created`` tells them apart)."""
    import httpx

    seen = set()
    for _ in range(100):  # new connections: the kernel spreads them over the workers
        with httpx.Client(base_url=deployment.bases[0], timeout=10) as c:
            for line in c.get("/metrics").text.splitlines():
                if line.startswith("nextbest_degraded_created"):
                    seen.add(line)
        if len(seen) > 1:
            break
    assert len(seen) == 2, f"replica a answered from {len(seen)} worker process(es)"


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
async def test_decision_suite(check: Check, deployment: Deployment) -> None:
    await check(deployment)
