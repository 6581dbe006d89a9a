"""The offline readers on the exporter's Parquet files: the same tables as the Redis export,
and report, OPE, export-log and training rows reading the log root (a folder or fsspec URL)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import redis

from contracts.keys import decision_stream, feedback_stream
from loadtests.faults import RedisProcess
from service.exporter import Exporter
from service.exporter.__main__ import drain
from tests.measurement.test_decision_log import T0, make_record
from training.cli import main
from training.measurement import decision_log
from training.measurement.log_training import messages_from_log


@pytest.fixture
def logged(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The measurement tests' log (122 decisions, 80 outcomes) in a Redis of our own."""
    rp = RedisProcess(tmp_path / "redis")
    rp.dir.mkdir()
    rp.start()
    try:
        r = redis.Redis.from_url(rp.url)
        records = []
        for i in range(120):
            arm = {0: "holdout", 1: "popular", 2: "explore", 3: "explore"}.get(i % 10, "model")
            records.append(make_record(i, arm, None if i % 17 == 5 else "OFF001"))
        gone = make_record(200, "explore", None)
        gone["suppressed"] = [["frequency_cap", "OFF001", "email"]]
        opted = {"decision_id": "0" * 12 + "ff" * 8, "ts": T0, "opted_out": True,
                 "placement": "campaign", "policy_version": "2026-11-22.1"}  # fmt: skip
        for rec in [*records, opted, gone]:
            r.xadd(decision_stream(rec["decision_id"]), {"record": json.dumps(rec)})
        for rec in records[::3]:
            did = rec["decision_id"]
            for event, value, dt in (("opened", None, 7200), ("converted", 25.0, 9000)):
                fb = {"decision_id": did, "event": event, "value": value, "ts": rec["ts"] + dt}
                r.xadd(feedback_stream(did), {"record": json.dumps(fb)})
        yield rp.url, tmp_path
    finally:
        rp.kill()


def test_the_files_give_the_tables_the_redis_export_gave(logged: tuple[str, Path]) -> None:
    url, tmp = logged
    assert main(["export-log", "--redis-url", url, "--out", str(tmp / "from-redis")]) == 0
    root = tmp / "log"
    assert drain(Exporter(redis.Redis.from_url(url), str(root), flush_s=0.3)) == 202
    d_redis, f_redis = decision_log.load_log(tmp / "from-redis")
    d_files, f_files = decision_log.load_log(root)
    key = ["ts", "decision_id"]
    pd.testing.assert_frame_equal(
        d_redis.sort_values(key).reset_index(drop=True),
        d_files.sort_values(key).reset_index(drop=True),
    )
    key = ["ts", "decision_id", "event"]
    pd.testing.assert_frame_equal(
        f_redis.sort_values(key).reset_index(drop=True),
        f_files.sort_values(key).reset_index(drop=True),
    )
    # export-log reads the files (default source: NEXTBEST_LOG_URL), with a time range
    out = tmp / "export"
    since, until = "2026-11-16T02:00:00Z", "2026-11-16T10:00:00Z"
    argv = ["export-log", "--from", str(root), "--out", str(out), "--since", since]
    argv += ["--until", until]
    assert main(argv) == 0
    d, _ = decision_log.load_log(out)
    inside = d_files[(d_files["ts"] >= since) & (d_files["ts"] < until)]
    assert len(d) == len(inside) > 0
    assert json.loads((out / "export.json").read_text())["decisions"] == len(inside)


def test_report_ope_and_training_rows_read_the_log_root(
    logged: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url, tmp = logged
    root = tmp / "log"
    drain(Exporter(redis.Redis.from_url(url), str(root), flush_s=0.3))
    assert main(["report", "--log", str(root), "--profiles", "-"]) == 0
    out = capsys.readouterr().out
    assert "Lift vs holdout" in out and "nba" in out and "1 opted-out records excluded" in out
    assert main(["ope", "--log", str(root), "--policy", "uniform"]) == 0
    out = capsys.readouterr().out
    assert "SNIPS" in out and "24 usable for OPE" in out
    rows = messages_from_log(root, min_age_hours=1.0)
    assert len(rows) > 0 and not rows["message_id"].duplicated().any()


def test_any_fsspec_filesystem(logged: tuple[str, Path]) -> None:
    """Object storage goes through fsspec: its in-memory filesystem stands in for it."""
    import fsspec

    url, _ = logged
    fs = fsspec.filesystem("memory")
    fs.rm("/nextbest-test", recursive=True) if fs.exists("/nextbest-test") else None
    exporter = Exporter(redis.Redis.from_url(url), "memory://nextbest-test/log", flush_s=0.3)
    assert not exporter.local
    assert drain(exporter) == 202
    assert fs.glob("/nextbest-test/log/decisions/date=*/hour=*/part-*.parquet")
    decisions, feedback = decision_log.read_log_files("memory://nextbest-test/log")
    assert len(decisions) == 122 and len(feedback) == 80
    d, _ = decision_log.load_log("memory://nextbest-test/log")
    assert len(d) == 122 and d["ts"].is_monotonic_increasing
