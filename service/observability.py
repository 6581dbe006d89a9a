"""Prometheus metrics, structured JSON logs with request and decision ids, optional tracing.

* Metrics live in one registry per app (``/metrics``): HTTP requests by route template and
  status, the decision's stages, decisions by arm and channel, suppressions, degraded and
  cold-start decisions, feedback, the spool, model swaps, the Redis circuit breaker and the
  serving model versions (an info-style gauge).
* Logs are one JSON object per line on stderr, for the service's loggers and uvicorn's alike;
  each line carries the ``request_id`` (the caller's ``X-Request-ID`` when it is a safe token,
  else a new one, echoed in the response) and the ``decision_id`` when one was made. Customer
  ids never appear in logs.
* Tracing (OpenTelemetry) is off unless ``NEXTBEST_OTEL=1``; off, nothing of OpenTelemetry is
  imported and no middleware runs.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import secrets
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = [
    "DECISION_ID",
    "REQUEST_ID",
    "Metrics",
    "RequestMetricsMiddleware",
    "configure_logging",
    "uvicorn_log_config",
]

_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0)
#: the request being served and the decision it made (for log lines)
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
DECISION_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "decision_id", default=None
)
_SAFE_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.http = Histogram(
            "nextbest_http_request_seconds",
            "HTTP requests by route template, method and status (time to the response start)",
            ["route", "method", "status"],
            registry=r,
            buckets=_BUCKETS,
        )
        self.stage = Histogram(
            "nextbest_decide_stage_seconds",
            "time per /decide stage (read, matrices, scoring, policy, commit)",
            ["stage"],
            registry=r,
            buckets=_BUCKETS,
        )
        self.total = Histogram(
            "nextbest_decide_seconds",
            "time of the decision (no HTTP)",
            registry=r,
            buckets=_BUCKETS,
        )
        self.decisions = Counter(
            "nextbest_decisions_total",
            "decisions by arm and chosen channel",
            ["arm", "channel"],
            registry=r,
        )
        self.suppressed = Counter(
            "nextbest_suppressed_total", "suppressed candidates by reason", ["reason"], registry=r
        )
        self.degraded = Counter(
            "nextbest_degraded_total", "decisions that used a fallback", registry=r
        )
        self.cold_start = Counter(
            "nextbest_cold_start_total",
            "decisions without usable features, by why (anonymous, no_features, stale, "
            "unavailable, no_models, little_history)",
            ["reason"],
            registry=r,
        )
        self.feedback = Counter(
            "nextbest_feedback_total", "feedback events", ["event", "status"], registry=r
        )
        self.spool_pending = Gauge(
            "nextbest_spool_pending", "log records waiting in the local spool", registry=r
        )
        self.model_swaps = Counter(
            "nextbest_model_swaps_total", "model set reloads", ["result"], registry=r
        )
        self.model_info = Gauge(
            "nextbest_model_info",
            "1 for the model versions being served (labels: kind, name, version, source)",
            ["kind", "name", "version", "source"],
            registry=r,
        )
        self.breaker_open = Gauge(
            "nextbest_redis_breaker_open", "1 while the Redis circuit breaker is open", registry=r
        )
        self.breaker_opened = Gauge(
            "nextbest_redis_breaker_opened",
            "how many times the Redis circuit breaker opened since start",
            registry=r,
        )

    def observe_decision(
        self,
        arm: str,
        channel: str,
        reasons: list[str],
        degraded: bool,
        stages: dict[str, float],
    ) -> None:
        self.decisions.labels(arm=arm, channel=channel).inc()
        for reason in set(reasons):
            self.suppressed.labels(reason=reason).inc()
        if degraded:
            self.degraded.inc()
        total = 0.0
        for name, seconds in stages.items():
            self.stage.labels(stage=name).observe(seconds)
            total += seconds
        self.total.observe(total)

    def serving(self, versions: dict[str, tuple[str, str]], source: str) -> None:
        """The model set now served: kind -> (registered name, version)."""
        self.model_info.clear()
        for kind, (name, version) in versions.items():
            self.model_info.labels(kind=kind, name=name, version=version, source=source).set(1)


class RequestMetricsMiddleware:
    """ASGI middleware: request id in and out, HTTP metrics by route template and status.

    Requests the router rejects before any route (404, 405) are counted by
    :meth:`count_unrouted`, Litestar's ``before_send`` hook.
    """

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _request_id(scope)
        token = REQUEST_ID.set(rid)
        dtoken = DECISION_ID.set(None)
        t0 = time.perf_counter()
        scope.setdefault("state", {})["nb_request_counted"] = True
        header = (b"x-request-id", rid.encode())

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append(header)
                self.metrics.http.labels(
                    route=scope.get("path_template") or "unmatched",
                    method=scope.get("method", ""),
                    status=str(message["status"]),
                ).observe(time.perf_counter() - t0)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)
            DECISION_ID.reset(dtoken)

    @staticmethod
    def count_unrouted(metrics: Metrics) -> Any:
        async def before_send(message: Any, scope: Any) -> None:
            if message["type"] != "http.response.start":
                return
            state = scope.get("state") or {}
            if state.get("nb_request_counted"):
                return
            rid = _request_id(scope)
            message.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            metrics.http.labels(
                route="unmatched", method=scope.get("method", ""), status=str(message["status"])
            ).observe(0.0)

        return before_send


def _request_id(scope: Any) -> str:
    for name, value in scope.get("headers") or ():
        if name == b"x-request-id":
            if _SAFE_ID.match(value):
                return str(value.decode())
            break
    return secrets.token_hex(8)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(time.time(), 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = REQUEST_ID.get()
        if rid is not None:
            out["request_id"] = rid
        did = DECISION_ID.get()
        if did is not None:
            out["decision_id"] = did
        if record.exc_info and record.exc_info[0] is not None:
            # type and where, never the message: messages can carry request data (an id)
            etype, _, tb = record.exc_info
            frames = traceback.extract_tb(tb)
            where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
            out["exc"] = f"{etype.__name__}{where}"
        return json.dumps(out)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter())
    root = logging.getLogger("nextbest")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def uvicorn_log_config(level: str = "INFO") -> dict[str, Any]:
    """uvicorn's ``log_config``: its loggers write the same JSON lines as the service's."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": _JsonFormatter}},
        "handlers": {"json": handler},
        "loggers": {
            name: {"handlers": ["json"], "level": level, "propagate": False}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }
