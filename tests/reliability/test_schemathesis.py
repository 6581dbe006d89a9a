"""Schemathesis against the served OpenAPI schema: generated valid and invalid requests for
every operation, against the production server, with every one of Schemathesis' checks:
no 5xx, every status code and header documented, every response body its schema, invalid
data rejected, valid data accepted, auth not ignored, 405 with ``Allow``.

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
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi import checks as oas

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
    # the auth checks send many keyless requests from this one address: not throttled here
    # (tests/reliability/test_security.py tests that throttle)
    svc: subprocess.Popen[bytes] = start_service(
        rp.url, model_bundle, tmp / "spool", port, {"NEXTBEST_AUTH_FAILURES_PER_MIN": "0"}
    )
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


#: every check Schemathesis has for an OpenAPI operation
CHECKS = [
    not_a_server_error,
    oas.status_code_conformance,
    oas.content_type_conformance,
    oas.response_headers_conformance,
    oas.response_schema_conformance,
    oas.negative_data_rejection,
    oas.positive_data_acceptance,
    oas.missing_required_header,
    oas.unsupported_method,
    oas.allow_header_conformance,
    oas.use_after_free,
    oas.ensure_resource_availability,
    oas.ignored_auth,
]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_check_passes(operations: list[Any], mode: GenerationMode) -> None:
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
    if mode is GenerationMode.POSITIVE:  # valid requests get all the way through
        assert reached.get("POST /decide", 0) >= MAX_EXAMPLES // 2, reached
    assert with_body >= {"POST /decide", "POST /decide/batch", "POST /feedback", "POST /events"}
    assert all(tried[k] > 0 for k in with_body), tried


def _drive(op: Any, mode: GenerationMode, tried: dict[str, int]) -> None:
    label = f"{op.method.upper()} {op.path}"

    @given(case=op.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def check(case: Any) -> None:
        tried[label] += 1
        response = case.call_and_validate(headers=AUTH, timeout=30, checks=CHECKS)
        if response.status_code == 200:
            reached[label] = reached.get(label, 0) + 1

    check()
