"""Observability: HTTP metrics by route and status, request and decision ids in the JSON
logs (uvicorn's too), breaker / model / cold-start metrics, optional OpenTelemetry tracing
exported over real OTLP/HTTP, the Feast layout canary, and the server's command line."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from litestar.testing import AsyncTestClient

from contracts.feast_repo import CANARY_ENTITY
from contracts.features import DEFAULT_SPEC
from service.adapters.feast_redis import FeastRedisLayout, field_hash
from service.app import create_app
from service.observability import uvicorn_log_config
from tests.support import make_settings

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

KEY = "obs-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
NOW = "2026-11-16T09:00:00Z"


def _env(redis_url: str, bundle: Path, tmp_path: Path, **more: object) -> dict[str, object]:
    return {
        "NEXTBEST_REDIS_URL": redis_url,
        "NEXTBEST_MODELS_DIR": bundle,
        "NEXTBEST_API_KEYS": KEY,
        "NEXTBEST_SPOOL_DIR": tmp_path / "spool",
        "NEXTBEST_MODEL_POLL_S": 0,
        "NEXTBEST_SCHEDULER_POLL_S": 0,
        "NEXTBEST_REDIS_TIMEOUT_MS": 500,
        **more,
    }


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.stream = io.StringIO()

    def emit(self, record: logging.LogRecord) -> None:
        self.stream.write(self.format(record) + "\n")


async def test_http_metrics_ids_and_gauges(
    redis_url: str, model_bundle: Path, redis_store: Any, tmp_path: Path
) -> None:
    app = create_app(make_settings(**_env(redis_url, model_bundle, tmp_path)))
    capture = _Capture()
    async with AsyncTestClient(app=app) as c:
        # the service's own JSON formatter, attached after the app configured it
        capture.setFormatter(logging.getLogger("nextbest").handlers[0].formatter)
        logging.getLogger("nextbest").addHandler(capture)
        try:
            body = {"anonymous_id": "obs-1", "context": {"placement": "home_banner"}, "now": NOW}
            ok = await c.post("/decide", json=body, headers={**AUTH, "X-Request-ID": "req-42"})
            assert ok.status_code == 200 and ok.headers["x-request-id"] == "req-42"
            bad = await c.post("/decide", json={"context": {}}, headers=AUTH)
            assert bad.status_code == 400 and len(bad.headers["x-request-id"]) == 16
            unsafe = await c.get("/health", headers={"X-Request-ID": "a b<c>"})
            assert unsafe.headers["x-request-id"] != "a b<c>"  # not echoed: a new one
            missing = await c.get("/no-such-route")
            assert missing.status_code == 404 and missing.headers["x-request-id"]
            logging.getLogger("nextbest.engine").warning("probe outside any request")
            metrics = (await c.get("/metrics")).text
        finally:
            logging.getLogger("nextbest").removeHandler(capture)
    assert (
        _metric(metrics, "nextbest_http_request_seconds_count", route="/decide", status="200") >= 1
    )
    assert (
        _metric(metrics, "nextbest_http_request_seconds_count", route="/decide", status="400") >= 1
    )
    assert (
        _metric(metrics, "nextbest_http_request_seconds_count", route="unmatched", status="404")
        >= 1
    )
    assert _metric(metrics, "nextbest_model_info", kind="propensity") == 1.0
    assert _metric(metrics, "nextbest_redis_breaker_open") == 0.0
    assert _metric(metrics, "nextbest_cold_start_total", reason="anonymous") >= 1
    lines = [json.loads(x) for x in capture.stream.getvalue().splitlines() if x]
    probe = [x for x in lines if x["msg"] == "probe outside any request"]
    assert probe and "request_id" not in probe[0]  # outside a request: no id


async def test_decision_id_and_request_id_in_log_lines(
    redis_url: str, model_bundle: Path, redis_store: Any, tmp_path: Path
) -> None:
    app = create_app(make_settings(**_env(redis_url, model_bundle, tmp_path)))
    capture = _Capture()
    async with AsyncTestClient(app=app) as c:
        capture.setFormatter(logging.getLogger("nextbest").handlers[0].formatter)
        logging.getLogger("nextbest").addHandler(capture)
        engine = app.state.engine
        real = engine.store.read_customer

        async def failing(*a: Any, **k: Any) -> Any:
            raise ConnectionError("state read failed")  # -> fallback, logged as a warning

        engine.store.read_customer = failing
        try:
            body = {"customer_id": "C0000007", "context": {"placement": "email"}, "now": NOW}
            r = await c.post("/decide", json=body, headers={**AUTH, "X-Request-ID": "req-log"})
        finally:
            engine.store.read_customer = real
            logging.getLogger("nextbest").removeHandler(capture)
    assert r.status_code == 200 and "redis_unavailable" in r.json()["degraded"]
    lines = [json.loads(x) for x in capture.stream.getvalue().splitlines() if x]
    mine = [x for x in lines if x.get("request_id") == "req-log"]
    assert mine, lines
    assert all(x["decision_id"] == r.json()["decision_id"] for x in mine)
    assert not any("C0000007" in json.dumps(x) for x in lines)  # no customer ids in logs


def test_uvicorn_logs_are_json() -> None:
    import logging.config

    logging.config.dictConfig(uvicorn_log_config("INFO"))
    capture = _Capture()
    handler = logging.getLogger("uvicorn.error").handlers[0]
    capture.setFormatter(handler.formatter)
    logging.getLogger("uvicorn.error").addHandler(capture)
    try:
        logging.getLogger("uvicorn.error").info("Started server process [%d]", 123)
    finally:
        logging.getLogger("uvicorn.error").removeHandler(capture)
    line = json.loads(capture.stream.getvalue())
    assert line["logger"] == "uvicorn.error" and line["msg"] == "Started server process [123]"


class _OtlpSink(BaseHTTPRequestHandler):
    received: list[bytes] = []  # noqa: RUF012

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def otlp_collector() -> Iterator[str]:
    """A real OTLP/HTTP endpoint on loopback that keeps what it receives."""
    _OtlpSink.received = []
    server = HTTPServer(("127.0.0.1", 0), _OtlpSink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


async def test_tracing_exports_request_spans_with_the_decision(
    redis_url: str,
    model_bundle: Path,
    redis_store: Any,
    tmp_path: Path,
    otlp_collector: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_collector)
    app = create_app(make_settings(**_env(redis_url, model_bundle, tmp_path, NEXTBEST_OTEL=1)))
    async with AsyncTestClient(app=app) as c:
        body = {"anonymous_id": "trace-1", "context": {"placement": "home_banner"}, "now": NOW}
        r = await c.post("/decide", json=body, headers=AUTH)
        assert r.status_code == 200
    # shutting the app down flushed the batch to the collector
    spans = []
    for raw in _OtlpSink.received:
        req = ExportTraceServiceRequest()
        req.ParseFromString(raw)
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                spans.extend(ss.spans)
    attrs = [{a.key: a.value for a in s.attributes} for s in spans]
    decided = [a for a in attrs if "nextbest.decision_id" in a]
    assert decided and decided[0]["nextbest.decision_id"].string_value == r.json()["decision_id"]
    assert "nextbest.stage_ms.read" in decided[0]


def test_tracing_off_installs_nothing(redis_url: str, tmp_path: Path) -> None:
    app = create_app(
        make_settings(**_env(redis_url, tmp_path / "no-models", tmp_path, NEXTBEST_OTEL=0))
    )
    assert not any("OpenTelemetry" in type(p).__name__ for p in app.plugins)
    assert not app.on_shutdown  # no tracer provider to flush


async def test_a_changed_feast_layout_stops_the_start(
    redis_url: str, model_bundle: Path, redis_store: Any, tmp_path: Path
) -> None:
    r = redis.Redis.from_url(redis_url)
    layout = FeastRedisLayout(DEFAULT_SPEC.raw, project="nextbest")
    key = layout.key(CANARY_ENTITY)
    field = field_hash("customer_profile", "tz_offset")
    written = r.hget(key, field)
    assert written is not None  # feature-store wrote the canary through the Feast SDK
    settings = make_settings(**_env(redis_url, model_bundle, tmp_path))
    async with AsyncTestClient(app=create_app(settings)) as c:  # the real layout: starts
        assert (await c.get("/health")).status_code == 200
    r.hset(key, field, b"\x35\x00\x00\x80\x3f")  # float 1.0 where Feast wrote an int64
    try:
        with pytest.raises(BaseException) as info:
            async with AsyncTestClient(app=create_app(settings)):
                pass
        errors = (
            info.value.exceptions if isinstance(info.value, BaseExceptionGroup) else [info.value]
        )
        assert any("Feast's Redis layout" in str(e) for e in errors), errors
    finally:
        r.hset(key, field, written)


def test_command_line_does_not_serve_for_help_version_and_check() -> None:
    run = [sys.executable, "-m", "service"]
    help_ = subprocess.run([*run, "--help"], capture_output=True, text=True, timeout=60)
    assert help_.returncode == 0 and "--check-config" in help_.stdout
    version = subprocess.run([*run, "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("nextbest ")
    variables = subprocess.run([*run, "--variables"], capture_output=True, text=True, timeout=60)
    assert "NEXTBEST_REDIS_URL" in variables.stdout
    env = {"PATH": "", "NEXTBEST_PORT": "not-a-port"}
    bad = subprocess.run([*run, "--check-config"], capture_output=True, text=True, timeout=60,
                         env=env)  # fmt: skip
    assert bad.returncode == 2 and "NEXTBEST_PORT" in bad.stderr


def test_check_config_names_each_problem(tmp_path: Path) -> None:
    env = {
        "NEXTBEST_REDIS_URL": "redis://127.0.0.1:1/0",
        "NEXTBEST_MODELS_DIR": str(tmp_path / "none"),
        "NEXTBEST_API_KEYS": "secret-key",
        "NEXTBEST_VAR_DIR": str(tmp_path),
    }
    out = subprocess.run(
        [sys.executable, "-m", "service", "--check-config"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 1
    assert "models:" in out.stderr and "redis:" in out.stderr
    assert "secret-key" not in out.stdout  # secrets masked
    shown = json.loads(out.stdout[: out.stdout.rindex("}") + 1])
    assert shown["security"]["api_keys"] == "***"
