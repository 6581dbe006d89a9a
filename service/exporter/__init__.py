"""The decision-log exporter: Redis streams -> append-only Parquet files, then trimmed.

``python -m service.exporter`` (one process per Redis; see :mod:`service.exporter.__main__`).

The service appends each decision and outcome to a stream of its log shard
(``nb:log:decisions:{nbSS}`` / ``nb:log:feedback:{nbSS}``, :mod:`contracts.keys`). The exporter
reads the 32 streams through one consumer group (:data:`GROUP`, created at id 0, so what was
logged before it first ran is exported too), and every ``flush_s`` seconds (or at ``max_rows``
entries) writes what it read as Parquet files under the log root (``NEXTBEST_LOG_URL``)::

    <root>/decisions/date=2026-11-29/hour=09/part-<first ms>-<digest>.parquet
    <root>/feedback/date=2026-11-29/hour=09/part-<first ms>-<digest>.parquet

partitioned by when Redis appended the entry (``logged_at``, the entry id's time), with the
columns of :mod:`contracts.log_schema` (derived from the record structs). Only after a file is
durable (written to a temporary name, fsync'ed, renamed, its folder fsync'ed; on object
storage: the upload completed) are its entries acknowledged (``XACK``) and deleted from the
stream (``XDEL``): what Redis keeps of the log is the backlog, nothing more.

**Exactly once in the files, across crashes.** A ``kill -9`` can land between a file's rename
and the acknowledgement of its entries (or between the acknowledgements of two shards). At
start the exporter therefore first re-reads its own pending entries (``XREADGROUP ... 0``:
delivered to it, never acknowledged) and claims those another consumer name left idle
(``XAUTOCLAIM``), and before writing them it reads the ``(shard, stream_id)`` columns of the
files already in their partitions: an entry found there is only acknowledged and deleted,
never written again. File names are derived from the entries they hold, so a rewrite of the
same set replaces its file instead of adding one. Every decision and outcome acknowledged by
the service is thus in exactly one row of one file (the test: tests/capacity/).

An entry that does not decode as its record (it cannot be a row) goes to
``<root>/rejected/<kind>/...jsonl`` with its id, and is trimmed like the others.

Metrics (Prometheus, ``NEXTBEST_EXPORTER_METRICS_PORT``): ``nextbest_exporter_lag_seconds``
(age of the oldest entry not yet exported), ``nextbest_exporter_backlog_entries``,
``nextbest_exporter_rows_total{kind}``, ``nextbest_exporter_files_total{kind}``,
``nextbest_exporter_recovered_total`` (entries already in a file at a restart) and
``nextbest_exporter_backlog_alert`` (1 while the backlog is over NEXTBEST_LOG_BACKLOG_MAX).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge

from contracts.keys import decision_streams, feedback_streams
from contracts.log_schema import DECISIONS, FEEDBACK, LogTable, Origin
from contracts.records import decode_decision, decode_feedback

__all__ = ["GROUP", "Exporter", "ExporterMetrics", "FlushResult", "log_filesystem"]

log = logging.getLogger("nextbest.exporter")

GROUP = "nb-exporter"
#: entries per XREADGROUP / XAUTOCLAIM call and stream
READ_COUNT = 2000


def log_filesystem(url: str) -> tuple[Any, str]:
    """(fsspec filesystem, root path in it) of ``NEXTBEST_LOG_URL`` (a folder or any URL)."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    return fs, str(root).rstrip("/")


class ExporterMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.lag = Gauge(
            "nextbest_exporter_lag_seconds",
            "age of the oldest decision/feedback stream entry not yet in a file",
            registry=r,
        )
        self.backlog = Gauge(
            "nextbest_exporter_backlog_entries", "stream entries not yet in a file", registry=r
        )
        self.alert = Gauge(
            "nextbest_exporter_backlog_alert",
            "1 while the backlog is over NEXTBEST_LOG_BACKLOG_MAX",
            registry=r,
        )
        self.rows = Counter(
            "nextbest_exporter_rows_total", "rows written to Parquet", ["kind"], registry=r
        )
        self.files = Counter(
            "nextbest_exporter_files_total", "Parquet files written", ["kind"], registry=r
        )
        self.rejected = Counter(
            "nextbest_exporter_rejected_total",
            "entries that did not decode (kept under rejected/)",
            ["kind"],
            registry=r,
        )
        self.recovered = Counter(
            "nextbest_exporter_recovered_total",
            "re-delivered entries found already written (acknowledged, not written again)",
            registry=r,
        )
        self.flush_seconds = Gauge(
            "nextbest_exporter_last_flush_seconds", "duration of the last flush", registry=r
        )


@dataclass
class FlushResult:
    rows: dict[str, int] = field(default_factory=lambda: {"decisions": 0, "feedback": 0})
    files: int = 0
    skipped: int = 0  # already in a file (a re-delivery after a crash)
    rejected: int = 0


#: entry read: (stream, entry id, raw record)
Entry = tuple[str, str, bytes | None]

_KINDS: dict[str, tuple[LogTable[Any], Callable[[bytes], Any]]] = {
    "decisions": (DECISIONS, decode_decision),
    "feedback": (FEEDBACK, decode_feedback),
}


def _shard(stream: str) -> int:
    return int(stream.rsplit("{nb", 1)[1].rstrip("}"))


def _kind(stream: str) -> str:
    return "decisions" if stream.startswith("nb:log:decisions:") else "feedback"


def _partition(ms: int) -> str:
    t = datetime.fromtimestamp(ms / 1000.0, UTC)
    return f"date={t:%Y-%m-%d}/hour={t:%H}"


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class Exporter:
    """Drains the log streams of one Redis (a sync client, plain or cluster) into files."""

    def __init__(
        self,
        client: Any,
        url: str,
        *,
        consumer: str = "exporter",
        flush_s: float = 10.0,
        max_rows: int = 50_000,
        claim_idle_s: float = 60.0,
        backlog_max: int = 0,
        metrics: ExporterMetrics | None = None,
    ) -> None:
        self.client = client
        self.fs, self.root = log_filesystem(url)
        self.local = "file" in (
            self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        )
        self.consumer = consumer
        self.flush_s = flush_s
        self.max_rows = max_rows
        self.claim_idle_ms = int(claim_idle_s * 1000)
        self.backlog_max = backlog_max
        self.metrics = metrics or ExporterMetrics()
        self.streams = [*decision_streams(), *feedback_streams()]

    # ------------------------------------------------------------------ setup
    def ensure_groups(self) -> None:
        """The consumer group on every stream (created at id 0: existing entries included)."""
        import redis

        for s in self.streams:
            try:
                self.client.xgroup_create(s, GROUP, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    # ------------------------------------------------------------------- read
    def _read(self, ids: dict[str, str]) -> list[Entry]:
        """One XREADGROUP per stream (pipelined; a cluster splits it per node). ``ids``:
        stream -> ``>`` (new entries) or ``0`` (this consumer's pending ones)."""
        pipe = self.client.pipeline(transaction=False)
        for s, i in ids.items():
            pipe.xreadgroup(GROUP, self.consumer, {s: i}, count=READ_COUNT)
        out: list[Entry] = []
        for reply in pipe.execute():
            for stream, entries in reply or []:
                name = stream.decode() if isinstance(stream, bytes) else str(stream)
                for entry_id, fields in entries:
                    raw = fields.get(b"record") if fields else None
                    out.append((name, entry_id.decode(), raw))
        return out

    def pending(self) -> list[Entry]:
        """Everything delivered and not acknowledged: this consumer's own pending entries,
        and those idle for ``claim_idle_s`` under another consumer name (claimed)."""
        got: dict[tuple[str, str], Entry] = {}
        for s in self.streams:
            start = "0"
            while True:  # own pending entries, READ_COUNT at a time
                batch = self._read({s: start})
                if not batch:
                    break
                for e in batch:
                    got[(e[0], e[1])] = e
                start = batch[-1][1]
            cursor = "0-0"
            while True:
                reply = self.client.xautoclaim(
                    s, GROUP, self.consumer, self.claim_idle_ms, cursor, count=READ_COUNT
                )
                cursor, entries = reply[0], reply[1]
                for entry_id, fields in entries:
                    raw = fields.get(b"record") if fields else None
                    eid = entry_id.decode()
                    got[(s, eid)] = (s, eid, raw)
                cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
                if cursor == "0-0":
                    break
        return list(got.values())

    def collect(self, stop: threading.Event | None = None) -> list[Entry]:
        """New entries until ``max_rows`` or ``flush_s`` (stops early when ``stop`` is set)."""
        batch: list[Entry] = []
        deadline = time.monotonic() + self.flush_s
        while len(batch) < self.max_rows and time.monotonic() < deadline:
            got = self._read(dict.fromkeys(self.streams, ">"))
            batch += got
            if stop is not None and stop.is_set():
                break
            if not got:
                wait = min(0.2, max(deadline - time.monotonic(), 0))
                if stop is not None:
                    stop.wait(wait)
                else:
                    time.sleep(wait)
        return batch

    # ------------------------------------------------------------------ write
    def _written(self, kind: str, partition: str) -> set[tuple[int, str]]:
        """(shard, stream_id) of every row already in a file of this partition."""
        import pyarrow.parquet as pq

        folder = f"{self.root}/{kind}/{partition}"
        try:
            names = [p for p in self.fs.ls(folder, detail=False) if str(p).endswith(".parquet")]
        except FileNotFoundError:
            return set()
        out: set[tuple[int, str]] = set()
        table: LogTable[Any] = _KINDS[kind][0]
        for name in names:
            with self.fs.open(name, "rb") as f:
                t = pq.read_table(f, columns=["shard", "stream_id"])
            out.update(table.origins(t))
        return out

    def _put(self, path: str, data: bytes) -> None:
        """Write ``data`` to ``path`` durably: on local disk temp + fsync + rename + fsync
        of the folder; elsewhere one upload (an object appears whole or not at all)."""
        folder = path.rsplit("/", 1)[0]
        self.fs.makedirs(folder, exist_ok=True)
        if not self.local:
            with self.fs.open(path, "wb") as f:
                f.write(data)
            return
        tmp = f"{folder}/.{uuid.uuid4().hex}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def _parquet(self, table: Any) -> bytes:
        import pyarrow.parquet as pq

        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        return buf.getvalue()

    def flush(self, entries: list[Entry], recovering: bool = False) -> FlushResult:
        """Write ``entries`` to files (per kind and hour), then acknowledge and delete them.

        ``recovering``: entries re-delivered after a crash; those already in a file of their
        partition are not written again."""
        t0 = time.monotonic()
        res = FlushResult()
        groups: dict[tuple[str, str], list[Entry]] = defaultdict(list)
        for e in entries:
            groups[(_kind(e[0]), _partition(_id_key(e[1])[0]))].append(e)
        for (kind, partition), group in sorted(groups.items()):
            group.sort(key=lambda e: (_id_key(e[1]), e[0]))
            if recovering:
                done = self._written(kind, partition)
                fresh = [e for e in group if (_shard(e[0]), e[1]) not in done]
                res.skipped += len(group) - len(fresh)
                group = fresh
            if not group:
                continue
            table, decode = _KINDS[kind]
            rows: list[tuple[Origin, Any]] = []
            bad: list[Entry] = []
            for e in group:
                try:
                    if e[2] is None:
                        raise msgspec.DecodeError("entry without a record")
                    rows.append((Origin(_shard(e[0]), e[1]), decode(e[2])))
                except msgspec.DecodeError:
                    bad.append(e)
            digest = hashlib.sha256(
                "\n".join(f"{e[0]} {e[1]}" for e in group).encode()
            ).hexdigest()[:16]
            name = f"part-{_id_key(group[0][1])[0]}-{digest}"
            if rows:
                self._put(
                    f"{self.root}/{kind}/{partition}/{name}.parquet",
                    self._parquet(table.table(rows)),
                )
                res.rows[kind] += len(rows)
                res.files += 1
                self.metrics.rows.labels(kind=kind).inc(len(rows))
                self.metrics.files.labels(kind=kind).inc()
            if bad:
                lines = [
                    json.dumps(
                        {"stream": s, "id": i, "record": (r or b"").decode("utf-8", "replace")}
                    )
                    for s, i, r in bad
                ]
                self._put(
                    f"{self.root}/rejected/{kind}/{partition}/{name}.jsonl",
                    ("\n".join(lines) + "\n").encode(),
                )
                res.rejected += len(bad)
                self.metrics.rejected.labels(kind=kind).inc(len(bad))
                log.error("%d %s entries did not decode: kept under rejected/", len(bad), kind)
        if res.skipped:
            self.metrics.recovered.inc(res.skipped)
        self.trim(entries)
        self.metrics.flush_seconds.set(time.monotonic() - t0)
        return res

    def trim(self, entries: Iterable[Entry]) -> None:
        """Acknowledge, then delete (one transaction per stream: one key, one slot; on a
        cluster client a pipeline in that order: a failure between the two leaves an entry
        acknowledged but not deleted, never a pending entry without its record)."""
        by_stream: dict[str, list[str]] = defaultdict(list)
        for s, i, _ in entries:
            by_stream[s].append(i)
        atomic = not hasattr(self.client, "get_nodes")  # redis.RedisCluster has it
        for s, ids in by_stream.items():
            for k in range(0, len(ids), 10_000):
                chunk = ids[k : k + 10_000]
                pipe = self.client.pipeline(transaction=atomic)
                pipe.xack(s, GROUP, *chunk)
                pipe.xdel(s, *chunk)
                pipe.execute()

    # ---------------------------------------------------------------- observe
    def observe(self) -> tuple[int, float]:
        """Backlog entries and lag seconds (the oldest entry left), into the metrics."""
        pipe = self.client.pipeline(transaction=False)
        for s in self.streams:
            pipe.xlen(s)
            pipe.xrange(s, "-", "+", count=1)
        replies = pipe.execute()
        backlog = sum(int(n) for n in replies[0::2])
        oldest = [_id_key(r[0][0].decode())[0] for r in replies[1::2] if r]
        lag = max(time.time() - min(oldest) / 1000.0, 0.0) if oldest else 0.0
        self.metrics.backlog.set(backlog)
        self.metrics.lag.set(lag)
        alert = bool(self.backlog_max) and backlog > self.backlog_max
        self.metrics.alert.set(1.0 if alert else 0.0)
        if alert:
            log.warning(
                "log backlog %d entries > NEXTBEST_LOG_BACKLOG_MAX=%d", backlog, self.backlog_max
            )
        return backlog, lag

    # -------------------------------------------------------------------- run
    def recover(self) -> FlushResult:
        """Write (once) what a previous run read and did not acknowledge (and remove the
        temporary files a killed write left: one exporter runs per log, so none is live)."""
        if self.local:
            for tmp in self.fs.glob(f"{self.root}/**/.*.tmp"):
                self.fs.rm_file(tmp)
        entries = self.pending()
        if not entries:
            return FlushResult()
        res = self.flush(entries, recovering=True)
        log.info(
            "recovered %d pending entries: %d already in files, %d rows written",
            len(entries),
            res.skipped,
            sum(res.rows.values()),
        )
        return res

    def run(self, stop: threading.Event) -> None:
        """Until ``stop``: recover, then collect and flush; Redis errors are retried."""
        recovered = False
        while not stop.is_set():
            try:
                if not recovered:
                    self.ensure_groups()
                    self.recover()
                    recovered = True
                self.observe()
                batch = self.collect(stop)
                if batch:
                    res = self.flush(batch)
                    log.info(
                        "exported %d decisions, %d feedback in %d files",
                        res.rows["decisions"],
                        res.rows["feedback"],
                        res.files,
                    )
            except Exception as exc:  # Redis down, storage down: nothing acknowledged, retry
                log.warning("export round failed (%s: %s); retrying", type(exc).__name__, exc)
                recovered = False  # what this round read is pending: recover it first
                stop.wait(2.0)
        self.observe()
