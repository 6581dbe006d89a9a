"""Smoke test: the benchmark runs end to end on the session's tiny world (no timed asserts).

It checks the machinery, not the speed: both implementations decide every request, the
stage breakdown adds up, the floor is measured, and (when wrk is installed) both servers
start, wrk's fixed-rate and saturation rows and Locust's mix report, with no errors.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import _with_db

pytestmark = [pytest.mark.redis, pytest.mark.slow]

N = 40


def _args(small_world: Path, model_bundle: Path, out: Path, url: str) -> list[str]:
    return [
        "--data-dir", str(small_world), "--models-dir", str(model_bundle), "--out", str(out),
        "--redis-url", url, "--requests", str(N), "--warmup", "5", "--floor-n", "50",
    ]  # fmt: skip


def test_bench_in_process_and_http(
    small_world: Path, model_bundle: Path, redis_url: str, tmp_path: Path
) -> None:
    from loadtests.bench import main

    url = _with_db(redis_url, 10)  # its own database: the bench resets its nb:* keys
    http = shutil.which("wrk") is not None
    extra = (
        ["--workers", "1", "--rates", "50", "--duration", "1", "--sat-connections", "2",
         "--locust-users", "2", "--locust-duration", "8"]
        if http
        else ["--no-http"]
    )  # fmt: skip
    figure = tmp_path / "figures" / "bench.png"
    assert (
        main([*_args(small_world, model_bundle, tmp_path, url), *extra, "--figure", str(figure)])
        == 0
    )
    res = json.loads((tmp_path / "latest.json").read_text())
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the run's chart
    for impl in ("service", "baseline"):
        for case in ("mix", "full"):
            got = res["inprocess"][impl][case]
            assert got["stages"]["total"]["n"] == N
            assert sum(got["outcomes"].values()) == N
            assert not any("degraded" in k for k in got["outcomes"]), got["outcomes"]
            parts = sum(v["mean"] for k, v in got["stages"].items() if k not in ("total", "cpu"))
            assert parts == pytest.approx(got["stages"]["total"]["mean"], rel=0.05)
    # the full case really scores: every decision had features and a model path
    assert res["inprocess"]["service"]["full"]["stages"]["scoring"]["p50"] > 0
    floor = res["inprocess"]["service"]["floor"]
    assert floor["redis_rtt"]["n"] == 50 and floor["onnx_3_runs"]["p50"] > 0
    assert "In-process decision" in res["table"]
    if http:
        for impl in ("service", "baseline"):
            rows = [*res["http"][impl]["rates"], res["http"][impl]["saturation"]]
            assert all(r["requests"] > 0 and r["errors"] == 0 for r in rows), rows
        lc = res["http"]["service"]["locust"]
        assert lc.get("requests", 0) > 0 and lc["failures"] == 0, lc
        assert lc.get("feedback_requests", 0) > 0, lc
