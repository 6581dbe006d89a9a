"""Prometheus metrics and structured JSON logs (no personal data: ids never logged)."""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics", "configure_logging"]

_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.stage = Histogram(
            "nextbest_decide_stage_seconds",
            "time per /decide stage",
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
        self.feedback = Counter(
            "nextbest_feedback_total", "feedback events", ["event", "status"], registry=r
        )
        self.spool_pending = Gauge(
            "nextbest_spool_pending", "log records waiting in the local spool", registry=r
        )
        self.model_swaps = Counter(
            "nextbest_model_swaps_total", "model set reloads", ["result"], registry=r
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


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(time.time(), 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
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
