"""In-process half of the benchmark: the decision function, stage by stage, and the raw floor.

``run_inprocess`` builds the app exactly as the server does (``create_app``, or the same
factory with the baseline's adapters; lifespan entered) with a :class:`StageRecorder` as its
metrics, then feeds request bodies one at a time through decode -> ``DecisionEngine.decide``
-> encode; the engine reports its own stages, so nothing is patched:

| stage | what |
|---|---|
| decode | request JSON -> ``DecideRequest`` (msgspec) |
| read | validation, allocation, real-time row + customer state from Redis (the feature read) |
| matrices | model input matrices from the features (service/features/vectors.py) |
| scoring | the three model runs (ONNX, or LightGBM for the baseline) |
| policy | the rest of the pure decision: consent, caps, quiet hours, eligibility, arbitration |
| commit | cap reservation + decision-log append (Redis) |
| response | response struct + metrics |
| encode | response -> JSON |

plus ``total`` (wall clock) and ``cpu`` (this process's CPU time for the whole request: what
limits throughput, and steadier than wall clock on a busy machine).

``measure_floor`` times what no implementation can avoid, in the same process and run: a
bare Redis round trip (PING through the service's client) and the three ONNX runs alone on
preallocated inputs of the full case's shapes (10 offers x 5 channels, 24 hours, 5 channels).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np

from service.observability import Metrics

STAGES = ("decode", "read", "matrices", "scoring", "policy", "commit", "response", "encode")


def summarize(values_s: Sequence[float] | np.ndarray) -> dict[str, float]:
    """p50/p90/p99/mean/max in milliseconds."""
    a = np.asarray(values_s, dtype=np.float64) * 1000.0
    if a.size == 0:
        return {"n": 0}
    return {
        "n": int(a.size),
        "p50": float(np.percentile(a, 50)),
        "p90": float(np.percentile(a, 90)),
        "p99": float(np.percentile(a, 99)),
        "mean": float(a.mean()),
        "max": float(a.max()),
    }


class StageRecorder(Metrics):
    """The service's metrics, also keeping the stages of the last decision (the engine reports
    read, matrices, scoring, policy and commit for every decision). Passed to ``create_app``."""

    def __init__(self) -> None:
        super().__init__()
        self.last: dict[str, float] = {}

    def observe_decision(
        self,
        arm: str,
        channel: str,
        reasons: list[str],
        degraded: bool,
        stages: dict[str, float],
    ) -> None:
        self.last = dict(stages)
        super().observe_decision(arm, channel, reasons, degraded, stages)


class Timings:
    """Per-stage samples and outcome counts, accumulated over blocks of requests."""

    def __init__(self) -> None:
        self.rows: dict[str, list[float]] = {s: [] for s in (*STAGES, "total", "cpu")}
        self.outcomes: dict[str, int] = {}

    def summary(self) -> dict[str, Any]:
        return {
            "stages": {s: summarize(v) for s, v in self.rows.items()},
            "outcomes": dict(sorted(self.outcomes.items())),
        }


async def decide_timed(
    engine: Any, bodies: Sequence[bytes], warmup: int = 0, into: Timings | None = None
) -> dict[str, Any]:
    """Run ``bodies`` through decode -> decide -> encode one at a time; per-stage timings
    of all but the first ``warmup`` (added to ``into`` when given). The engine's metrics must
    be a :class:`StageRecorder` (``create_app(settings, metrics=StageRecorder())``)."""
    from service.schemas import DecideRequest

    recorder = engine.metrics
    if not isinstance(recorder, StageRecorder):
        raise TypeError("build the app with create_app(..., metrics=StageRecorder())")
    decoder = msgspec.json.Decoder(DecideRequest)
    encoder = msgspec.json.Encoder()
    acc = into if into is not None else Timings()
    rows, outcomes = acc.rows, acc.outcomes
    for k, body in enumerate(bodies):  # the first ``warmup`` are not recorded
        c0 = time.process_time()
        t0 = time.perf_counter()
        req = decoder.decode(body)
        t1 = time.perf_counter()
        resp = await engine.decide(req)
        t2 = time.perf_counter()
        encoder.encode(resp)
        t3 = time.perf_counter()
        c3 = time.process_time()
        if k < warmup:
            continue
        stages = recorder.last
        rows["decode"].append(t1 - t0)
        for name in ("read", "matrices", "scoring", "policy", "commit"):
            rows[name].append(stages.get(name, 0.0))
        rows["response"].append(max((t2 - t1) - sum(stages.values()), 0.0))
        rows["encode"].append(t3 - t2)
        rows["total"].append(t3 - t0)
        rows["cpu"].append(c3 - c0)
        kind = (
            "opted_out"
            if any(s.reason == "no_consent" and not s.channel for s in resp.suppressed)
            else "action"
            if resp.action
            else "no_action"
        )
        if resp.cold_start:
            kind += "+cold_start"
        if resp.degraded:
            kind += "+degraded"
        outcomes[kind] = outcomes.get(kind, 0) + 1
    return acc.summary()


async def measure_floor(engine: Any, n: int = 2000, unit: str | None = None) -> dict[str, Any]:
    """A bare Redis round trip and the three ONNX runs alone (full-case shapes); for
    reference also the decision's real state read for ``unit`` (one pipelined round trip:
    real-time row, cart, features, contacts, purchases, decoded)."""
    client = engine.store.client
    for _ in range(50):
        await client.ping()
    rtt = []
    for _ in range(n):
        t = time.perf_counter()
        await client.ping()
        rtt.append(time.perf_counter() - t)
    reads = []
    if unit is not None:
        extra = engine.realtime.store if engine.realtime is not None else None
        now = time.time()
        for _ in range(n):
            t = time.perf_counter()
            await engine.store.read_customer(unit, now, engine.models.spec, extra=extra)
            reads.append(time.perf_counter() - t)
    models = engine.models
    shapes = {"propensity": 50, "send_time": 24, "channel": 5}
    runs = []
    for kind, rows in shapes.items():
        m = models.models[kind]
        example = np.asarray(models.manifest["models"][kind]["input_example"], dtype=np.float32)
        x = np.ascontiguousarray(np.resize(example, (rows, example.shape[1])))
        runs.append((m.session, [m.output_name], m.input_name, x))
    for sess, out, name, x in runs * 50:
        sess.run(out, {name: x})
    onnx = []
    for _ in range(n):
        t = time.perf_counter()
        for sess, out, name, x in runs:
            sess.run(out, {name: x})
        onnx.append(time.perf_counter() - t)
    both = np.asarray(rtt) + np.asarray(onnx)
    return {
        "redis_rtt": summarize(rtt),
        "onnx_3_runs": summarize(onnx),
        "floor": summarize(both),
        "state_read": summarize(reads),
        "shapes": shapes,
    }
