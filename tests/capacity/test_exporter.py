"""The decision-log exporter on a real Redis: exactly once in the files, through crashes.

Each test runs a redis-server of its own (free loopback port, no persistence needed: the
exporter's crash is what is tested, not Redis's), appends through the service's own
:class:`RedisStore` scripts, and reads the files back with DuckDB / the offline readers.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pytest
import redis
import redis.asyncio as aioredis

from contracts.keys import decision_key, decision_streams, feedback_streams
from contracts.records import (
    ChoiceRecord,
    DecisionMarker,
    DecisionRecord,
    FeedbackRecord,
    decode_marker,
    encode,
    encode_marker,
)
from loadtests.faults import RedisProcess
from service.adapters.redis_store import RedisStore
from service.domain.config import load_policy
from service.exporter import GROUP, Exporter
from service.exporter.__main__ import drain
from training.measurement import decision_log

ROOT = Path(__file__).resolve().parents[2]


def decision(i: int, ts: float) -> DecisionRecord:
    did = f"{i:032x}"
    return DecisionRecord(
        decision_id=did,
        ts=ts,
        unit=f"C{i:07d}",
        known=True,
        arm="model" if i % 10 else "holdout",
        holdout=i % 10 == 0,
        policy="model",
        action=ChoiceRecord(
            offer="OFF001",
            channel="email",
            send_at=ts + 60,
            local_hour=9,
            p=0.01,
            ev=0.2,
            propensity=0.02,
            channel_score=0.3,
            hour_lift=1.1,
        )
        if i % 10
        else None,
        model_versions={"propensity": "3"},
        policy_version="test",
        realtime={"views_1h": i % 4},
    )


async def _append(url: str, start: int, n: int, feedback_every: int = 3) -> None:
    client = aioredis.Redis.from_url(url)
    store = RedisStore(client, load_policy().contact_policy, record_ttl_s=7 * 86400)
    now = time.time()
    for i in range(start, start + n):
        rec = decision(i, now)
        marker = DecisionMarker(unit=rec.unit, known=True, arm=rec.arm, offer="OFF001", ts=now)
        assert await store.append_decision(rec.decision_id, encode(rec), encode_marker(marker))
        if i % feedback_every == 0:
            fb = FeedbackRecord(decision_id=rec.decision_id, event="converted", ts=now, value=5.0)
            status, _ = await store.append_feedback(rec.decision_id, "converted", encode(fb))
            assert status == 1
    await client.aclose()


def append(url: str, start: int, n: int) -> None:
    asyncio.run(_append(url, start, n))


def file_ids(root: Path, kind: str) -> list[str]:
    glob = root / kind / "**" / "*.parquet"
    if not list((root / kind).glob("**/*.parquet")):
        return []
    rows = duckdb.sql(f"SELECT decision_id FROM read_parquet('{glob}')").fetchall()
    return [r[0] for r in rows]


def backlog(r: Any) -> int:
    return sum(int(r.xlen(s)) for s in [*decision_streams(), *feedback_streams()])


def test_export_trims_redis_and_keeps_the_compact_markers(rp: RedisProcess, tmp_path: Path) -> None:
    append(rp.url, 0, 600)
    r = redis.Redis.from_url(rp.url)
    assert backlog(r) == 800
    before = int(r.info("memory")["used_memory"])
    root = tmp_path / "log"
    exporter = Exporter(r, str(root), flush_s=0.5)
    assert drain(exporter) == 800
    assert backlog(r) == 0  # acknowledged and deleted: Redis keeps no log
    assert int(r.info("memory")["used_memory"]) < before
    ids = file_ids(root, "decisions")
    assert len(ids) == 600 and len(set(ids)) == 600
    assert Counter(file_ids(root, "feedback")) == Counter(f"{i:032x}" for i in range(0, 600, 3))
    # the decision's marker stays for the feedback window: one small hash with its TTL,
    # the compact (MessagePack) marker and one field per outcome logged
    key = decision_key(f"{6:032x}")
    raw = r.hget(key, "m")
    assert raw is not None and raw[:1] != b"{" and len(raw) < 60
    assert decode_marker(raw).unit == "C0000006"
    assert r.hgetall(key) == {b"m": raw, b"converted": b"1"}
    assert r.object("encoding", key) == b"listpack"
    assert 6 * 86400 < r.ttl(key) <= 7 * 86400
    assert not list(r.scan_iter(match="nb:fb:*"))  # no key per outcome any more
    # partitioned by the hour Redis logged them; the record structs are the columns
    parts = {p.parent.name for p in root.glob("decisions/date=*/hour=*/*.parquet")}
    assert parts and all(p.startswith("hour=") for p in parts)
    decisions, feedback = decision_log.load_log(root)
    assert len(decisions) == 600 and len(feedback) == 200
    assert list(decisions.columns) == list(decision_log.DECISION_COLUMNS)
    recs, _ = decision_log.read_log_files(root)
    assert recs[7] == decision(7, recs[7].ts)  # lossless: nested actions, JSON dicts
    assert exporter.observe() == (0, 0.0)
    assert exporter.metrics.rows.labels(kind="decisions")._value.get() == 600


def test_crash_between_the_file_and_the_ack_rewrites_nothing(
    rp: RedisProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process dies after the files are durable, having acknowledged only some shards:
    the restart re-reads every pending entry, finds them in the files, acknowledges them."""
    append(rp.url, 0, 400)
    r = redis.Redis.from_url(rp.url)
    root = tmp_path / "log"
    first = Exporter(r, str(root), flush_s=0.5)
    first.ensure_groups()
    batch = first.collect()
    assert len(batch) == 400 + 134
    real_trim = first.trim

    def dies_half_way(entries: Any) -> None:
        entries = list(entries)
        real_trim([e for e in entries if e[0].endswith(("{nb00}", "{nb01}", "{nb02}"))])
        raise SystemExit("kill -9")

    monkeypatch.setattr(first, "trim", dies_half_way)
    with pytest.raises(SystemExit):
        first.flush(batch)
    assert 0 < backlog(r) < 534
    # more traffic arrives before the restart
    append(rp.url, 400, 200)
    second = Exporter(r, str(root), flush_s=0.5)  # same consumer name: its pending entries
    drain(second)
    assert second.metrics.recovered._value.get() > 0
    ids = file_ids(root, "decisions")
    assert len(ids) == 600 and len(set(ids)) == 600
    fb = file_ids(root, "feedback")
    assert len(fb) == len(set(fb)) == len(range(0, 600, 3))
    assert backlog(r) == 0
    pending = sum(int(r.xpending(s, GROUP)["pending"]) for s in decision_streams())
    assert pending == 0


def test_entries_of_a_dead_consumer_are_claimed(rp: RedisProcess, tmp_path: Path) -> None:
    append(rp.url, 0, 100)
    r = redis.Redis.from_url(rp.url)
    root = tmp_path / "log"
    old = Exporter(r, str(root), consumer="host-a", flush_s=0.3)
    old.ensure_groups()
    assert len(old.collect()) == 134  # read, never written: that process died
    new = Exporter(r, str(root), consumer="host-b", flush_s=0.3, claim_idle_s=0.0)
    drain(new)
    ids = file_ids(root, "decisions")
    assert len(ids) == len(set(ids)) == 100 and backlog(r) == 0


def test_kill_9_mid_run_loses_and_duplicates_nothing(rp: RedisProcess, tmp_path: Path) -> None:
    """The real process under traffic, SIGKILLed three times and restarted."""
    root = tmp_path / "log"
    env = {
        **os.environ,
        "NEXTBEST_REDIS_URL": rp.url,
        "NEXTBEST_LOG_URL": str(root),
        "NEXTBEST_EXPORTER_FLUSH_S": "0.3",
        "NEXTBEST_EXPORTER_METRICS_PORT": "0",
        "NEXTBEST_LOG_LEVEL": "WARNING",
    }

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "service.exporter"], cwd=ROOT, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip

    n, chunk = 3000, 250

    def write() -> None:  # paced, so that the kills land while traffic still arrives
        for i in range(0, n, chunk):
            append(rp.url, i, chunk)
            time.sleep(0.25)

    writer = threading.Thread(target=write, daemon=True)
    proc = start()
    writer.start()
    kills = 0
    r = redis.Redis.from_url(rp.url)
    deadline = time.monotonic() + 120
    # at least three kills even when the writer is done first (a fast machine): a kill
    # while the exporter drains the backlog is as much a crash as one under traffic
    while (writer.is_alive() or kills < 3) and time.monotonic() < deadline:
        time.sleep(0.9)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        proc = start()
    writer.join(60)
    assert not writer.is_alive()
    # the last one drains what is left, then stops cleanly on SIGTERM
    t_end = time.monotonic() + 60
    while backlog(r) and time.monotonic() < t_end:
        time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, proc.stderr.read().decode() if proc.stderr else ""
    assert kills >= 3
    assert backlog(r) == 0
    ids = file_ids(root, "decisions")
    dupes = [k for k, c in Counter(ids).items() if c > 1]
    assert not dupes and len(ids) == n
    fb = file_ids(root, "feedback")
    assert len(fb) == len(set(fb)) == len(range(0, n, 3))
    # a killed write leaves no partial file among the readable ones (temporary names)
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{root}/*/**/*.parquet')").fetchall()


async def _append_cluster(url: str, n: int) -> None:
    client = aioredis.RedisCluster.from_url(url)
    store = RedisStore(client, load_policy().contact_policy)
    now = time.time()
    for i in range(n):
        rec = decision(i, now)
        assert await store.append_decision(rec.decision_id, encode(rec), b"{}")
        if i % 3 == 0:
            fb = FeedbackRecord(decision_id=rec.decision_id, event="opened", ts=now)
            assert (await store.append_feedback(rec.decision_id, "opened", encode(fb)))[0] == 1
    await client.aclose()


def test_a_redis_cluster_is_drained_through_the_slot_map(tmp_path: Path) -> None:
    """The 32 streams live on different nodes: reads, acknowledgements and trims follow
    the slot map (NEXTBEST_REDIS_CLUSTER=1)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from redis_cluster import LocalCluster

    from service.adapters.redis_store import sync_client

    with LocalCluster(tmp_path / "cluster", masters=3) as cluster:
        asyncio.run(_append_cluster(cluster.url, 300))
        r = sync_client(cluster.url, cluster=True)
        exporter = Exporter(r, str(tmp_path / "log"), flush_s=0.3)
        assert drain(exporter) == 400
        assert exporter.observe() == (0, 0.0)
        ids = file_ids(tmp_path / "log", "decisions")
        assert len(ids) == len(set(ids)) == 300
        r.close()
