"""A local append-only spool for log writes that Redis could not take.

Each line is one JSON record (kind, id, payload, extra, spooled_at). A record is fsync'ed
before the request that produced it is answered, so nothing acknowledged is lost if the
process or the machine dies. Every process of a host appends to its own file
(``spool-<pid>.jsonl``) in one shared directory; any of them replays all files, including
those of processes that died.

**Claiming without losing a line.** An appender opens its file, takes an exclusive
``flock`` and checks that the path still names the inode it holds before it writes; a
replayer takes the same lock (non-blocking) and renames the file away before reading it. A
writer that opened the file just before the rename therefore finds the path gone or
changed, and writes to a fresh file instead of into one that is being read and deleted.
A replayer keeps its lock on the claimed file until it is done, so a file left behind by a
replayer that died (``*.replaying``) is picked up by the next one.

**Which decisions it holds.** Feedback for a decision acknowledged from the spool must wait
for it, not be refused: so the spool keeps the ids of the decisions in its files in a small
SQLite table beside them (``<name>.decisions.sqlite3``, WAL), shared by every process of
the host and kept across restarts. An appender adds the id while it still holds the file's
lock (a replayer cannot claim the line before its id is in); a replayer removes the ids it
put into Redis and deletes the claimed files in one transaction. The files stay the truth:
each process derives the table from them again when it opens the spool (in one transaction,
so no replay interleaves), which also repairs what a power loss took from the table.

**Order and idempotency.** A replay sends every spooled decision before any feedback, so
feedback never arrives before a decision that was spooled by another process; both writes
are idempotent in Redis (a decision id, a (decision, event) pair land once), so a record
sent twice after a crash lands once. Feedback whose decision is still unknown after the
decisions went through is kept for ``defer_unknown_s`` (its decision may be spooled on
another host) and then dropped, counted by the caller.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec

__all__ = ["SendResult", "Spool"]

log = logging.getLogger("nextbest.spool")

#: send(kind, id, payload, extra) -> True when written (or already there), False when the
#: feedback's decision is unknown; raises when Redis is unreachable
Send = Callable[[str, str, bytes, bytes | None], Awaitable[bool]]


class _Entry(msgspec.Struct, frozen=True):
    kind: str
    id: str
    payload: str  # base64
    extra: str | None
    spooled_at: float = 0.0


class _Head(msgspec.Struct, frozen=True):
    """What the index needs of a spooled record (the rest of the line is skipped)."""

    kind: str
    id: str


@dataclass
class SendResult:
    sent: int = 0
    deferred: int = 0
    dropped: int = 0


class Spool:
    def __init__(
        self, directory: Path, name: str = "spool", defer_unknown_s: float = 600.0
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.name = name
        self.path = directory / f"{name}-{os.getpid()}.jsonl"
        self.defer_unknown_s = defer_unknown_s
        self._lock = threading.Lock()
        self._enc = msgspec.json.Encoder()
        self._dec = msgspec.json.Decoder(_Entry)
        self._head = msgspec.json.Decoder(_Head)
        #: ids of the decisions in the spool files of this directory (every process's)
        self._index_lock = threading.Lock()
        self._index = _open_index(directory / f"{name}.decisions.sqlite3")
        self._rebuild_index()

    def close(self) -> None:
        with self._index_lock:
            self._index.close()

    # ------------------------------------------------------------------ index
    def holds_decision(self, decision_id: str) -> bool:
        """Is this decision in a spool file of this host, not yet replayed into Redis?
        Blocking: call it from a worker thread."""
        with self._index_lock:
            row = self._index.execute(
                "SELECT 1 FROM decisions WHERE id = ?", (decision_id,)
            ).fetchone()
        return row is not None

    def _index_add(self, decisions: Iterable[str]) -> None:
        ids = [(i,) for i in decisions]
        if not ids:
            return
        try:
            with self._index_lock:
                self._index.executemany("INSERT OR IGNORE INTO decisions VALUES (?)", ids)
        except sqlite3.Error as exc:  # e.g. closed by a shutdown while a request still spools
            # the line is durable, which is what matters; the next start indexes it again
            log.warning("spool index not updated: %s", type(exc).__name__)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction on the index (other processes' writes wait for it)."""
        with self._index_lock:
            self._index.execute("BEGIN IMMEDIATE")
            try:
                yield self._index
            except BaseException:
                self._index.execute("ROLLBACK")
                raise
            self._index.execute("COMMIT")

    def _rebuild_index(self) -> None:
        """The index from the spool files, which are the truth (in one transaction: a
        replayer deletes ids and files in one too, so none is resurrected)."""
        with self._transaction() as db:
            held: set[str] = set()
            for path in self._files():
                try:
                    data = path.read_bytes()
                except FileNotFoundError:  # replayed meanwhile
                    continue
                for line in data.splitlines():
                    try:
                        head = self._head.decode(line)
                    except msgspec.DecodeError:  # being written: its writer indexes it
                        continue
                    if head.kind == "decision":
                        held.add(head.id)
            db.execute("DELETE FROM decisions")
            db.executemany("INSERT OR IGNORE INTO decisions VALUES (?)", ((i,) for i in held))

    # ------------------------------------------------------------------ write
    def append(self, kind: str, id_: str, payload: bytes, extra: bytes | None) -> None:
        """Append one record durably (fsync'ed). Blocking: call it from a worker thread."""
        entry = _Entry(
            kind,
            id_,
            base64.b64encode(payload).decode(),
            base64.b64encode(extra).decode() if extra is not None else None,
            time.time(),
        )
        self._write_lines(self.path, [self._enc.encode(entry)], [id_] if kind == "decision" else ())

    def _write_lines(self, path: Path, lines: list[bytes], decisions: Iterable[str] = ()) -> None:
        """Append ``lines`` (fsync'ed) and index ``decisions`` before the file's lock goes."""
        data = b"".join(line + b"\n" for line in lines)
        with self._lock:
            while True:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    try:
                        same = os.stat(path).st_ino == os.fstat(fd).st_ino
                    except FileNotFoundError:
                        same = False
                    if not same:  # a replayer claimed this file after we opened it
                        continue
                    os.write(fd, data)
                    os.fsync(fd)
                    self._index_add(decisions)
                    return
                finally:
                    os.close(fd)  # also releases the lock

    # ------------------------------------------------------------------- read
    def _files(self) -> list[Path]:
        return [
            *self.directory.glob(f"{self.name}-*.jsonl"),
            *self.directory.glob(f"{self.name}-*.replaying"),
        ]

    def has_pending(self) -> bool:
        """Cheap: is any spool file non-empty? (called every second by the replay loop)"""
        for p in self._files():
            try:
                if p.stat().st_size > 0:
                    return True
            except FileNotFoundError:
                continue
        return False

    def pending(self) -> int:
        """Records waiting (reads the files: for /metrics, not for a hot loop)."""
        n = 0
        for p in self._files():
            try:
                n += sum(1 for line in p.read_bytes().splitlines() if line.strip())
            except FileNotFoundError:
                continue
        return n

    def _claim(self) -> list[tuple[Path, int]]:
        """Lock and take every spool file that no live process is writing or replaying."""
        claimed: list[tuple[Path, int]] = []
        paths = sorted(self._files(), key=_mtime)
        for path in paths:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # being written to or replayed right now: next round
                os.close(fd)
                continue
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # another replayer took it
                os.close(fd)
                continue
            if path.suffix == ".replaying":
                claimed.append((path, fd))  # left by a replayer that died: ours now
                continue
            target = path.with_name(f"{path.stem}.{os.getpid()}-{time.time_ns()}.replaying")
            os.rename(path, target)
            claimed.append((target, fd))
        return claimed

    async def replay(self, send: Send) -> SendResult:
        """Send every spooled record: decisions first, then feedback. Returns the counts.

        Stops at the first failure (Redis gone again); what was not sent stays spooled.
        """
        claimed = self._claim()
        if not claimed:
            return SendResult()
        result = SendResult()
        entries: list[tuple[bytes, _Entry]] = []
        for path, _ in claimed:
            for line in path.read_bytes().splitlines():
                if line.strip():
                    entries.append((line, self._dec.decode(line)))
        decisions = [e for e in entries if e[1].kind == "decision"]
        feedback = [e for e in entries if e[1].kind != "decision"]
        keep: list[bytes] = []
        landed: list[str] = []  # decisions now in Redis
        now = time.time()
        try:
            for i, (_line, e) in enumerate(decisions):
                try:
                    await send(e.kind, e.id, *_payload(e))
                except Exception:  # nothing from here on went through
                    keep += [ln for ln, _ in decisions[i:]] + [ln for ln, _ in feedback]
                    raise
                result.sent += 1
                landed.append(e.id)
            for i, (line, e) in enumerate(feedback):
                try:
                    ok = await send(e.kind, e.id, *_payload(e))
                except Exception:
                    keep += [ln for ln, _ in feedback[i:]]
                    raise
                if ok:
                    result.sent += 1
                elif now - e.spooled_at < self.defer_unknown_s:
                    keep.append(line)  # its decision may still be spooled elsewhere
                    result.deferred += 1
                else:
                    result.dropped += 1
        finally:
            try:
                if keep:  # durable before the claimed files go (their decisions stay indexed)
                    name = f"{self.name}-retry-{os.getpid()}-{time.time_ns()}.jsonl"
                    self._write_lines(self.directory / name, keep)
                # the landed decisions leave the index with the files that held them
                with self._transaction() as db:
                    db.executemany("DELETE FROM decisions WHERE id = ?", ((i,) for i in landed))
                    for path, _ in claimed:
                        path.unlink(missing_ok=True)
            finally:
                for _, fd in claimed:
                    os.close(fd)
        return result


def _payload(e: _Entry) -> tuple[bytes, bytes | None]:
    return base64.b64decode(e.payload), (base64.b64decode(e.extra) if e.extra is not None else None)


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _open_index(path: Path) -> sqlite3.Connection:
    """The decisions table (created when missing; derived data: a broken file is replaced)."""

    def connect() -> sqlite3.Connection:
        db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # the files are fsync'ed and the table is rebuilt from them at every start
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS decisions (id TEXT PRIMARY KEY) WITHOUT ROWID")
        except BaseException:
            db.close()
            raise
        return db

    try:
        return connect()
    except sqlite3.DatabaseError as exc:
        if isinstance(exc, sqlite3.OperationalError):  # locked, unwritable: not ours to fix
            raise
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return connect()
