"""Schemathesis against the served OpenAPI schema: generated valid and invalid requests for
every operation, against the production server; not one may get a 5xx.

Bounded: ``MAX_EXAMPLES`` per operation and generation mode (positive and negative), fixed
seed, so the run is repeatable and takes well under a minute.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.generation.modes import GenerationMode

from loadtests.faults import API_KEY, RedisProcess, free_port, start_service

pytestmark = [pytest.mark.slow]

MAX_EXAMPLES = 25
AUTH = {"Authorization": f"Bearer {API_KEY}"}
reached: dict[str, int] = {}  # operation -> 200 answers (per test run)


@pytest.fixture(scope="module")
def served(
    model_bundle: Path, small_world: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    from loadtests.faults import load_features

    tmp = tmp_path_factory.mktemp("schemathesis")
    rp = RedisProcess(tmp / "redis")
    rp.dir.mkdir()
    rp.start()
    load_features(rp.url, small_world, 10)
    port = free_port()
    svc: subprocess.Popen[bytes] = start_service(rp.url, model_bundle, tmp / "spool", port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        svc.send_signal(signal.SIGTERM)
        try:
            svc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            svc.kill()
        rp.kill()


@pytest.fixture(scope="module")
def operations(served: str) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{served}/schema/openapi.json")
    ops = [result.ok() for result in schema.get_all_operations()]
    assert {f"{o.method.upper()} {o.path}" for o in ops} >= {
        "POST /decide",
        "POST /decide/batch",
        "POST /feedback",
        "POST /events",
        "GET /ready",
        "GET /models",
        "POST /admin/models/reload",
    }
    return ops


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_errors(operations: list[Any], mode: GenerationMode) -> None:
    """Drive each operation with Schemathesis's generated cases (Hypothesis strategies)."""
    tried: dict[str, int] = {}
    reached.clear()
    for op in operations:
        tried[f"{op.method.upper()} {op.path}"] = 0
        try:
            _drive(op, mode, tried)
        except Unsatisfiable:  # nothing to get wrong: no body, no parameters
            assert mode is GenerationMode.NEGATIVE and not list(op.body), op.path
    with_body = {f"{o.method.upper()} {o.path}" for o in operations if list(o.body)}
    if mode is GenerationMode.POSITIVE:  # a share of valid requests got all the way through
        assert reached.get("POST /decide", 0) >= MAX_EXAMPLES // 4, reached
    assert with_body >= {"POST /decide", "POST /decide/batch", "POST /feedback", "POST /events"}
    assert all(tried[k] > 0 for k in with_body), tried


def _steer(case: Any, data: st.DataObject) -> None:
    """Make most generated decisions reach the decision core, not just validation.

    The schema cannot enumerate what depends on the loaded models and experiments (offer
    ids, time zone names, arm names), so a generated ``candidates`` or ``timezone`` is
    almost always unknown (a correct 422). For most cases those fields are dropped; the
    rest of the request stays exactly as generated.
    """
    reqs = case.body.get("requests", []) if op_is_batch(case) else [case.body]
    for body in reqs:
        if not isinstance(body, dict) or not isinstance(body.get("context"), dict):
            continue
        if data.draw(st.integers(0, 9), label="steer") < 8:
            for key in ("candidates", "experiment"):
                body.pop(key, None)
            body["context"].pop("timezone", None)


def op_is_batch(case: Any) -> bool:
    return isinstance(case.body, dict) and "requests" in case.body


def _drive(op: Any, mode: GenerationMode, tried: dict[str, int]) -> None:
    label = f"{op.method.upper()} {op.path}"

    @given(case=op.as_strategy(generation_mode=mode), steer=st.data())
    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def check(case: Any, steer: st.DataObject) -> None:
        if mode is GenerationMode.POSITIVE and op.path in ("/decide", "/decide/batch"):
            _steer(case, steer)
        tried[label] += 1
        response = case.call(headers=AUTH, timeout=30)
        assert response.status_code < 500, (label, case.body, response.text)
        if response.status_code == 200:
            reached[label] = reached.get(label, 0) + 1
        if response.status_code in (400, 413, 422):
            body = response.json()  # machine-readable and says what
            assert body["error"] and body["message"], body

    check()
