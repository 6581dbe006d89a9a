"""A local append-only spool for log writes that Redis could not take.

Each line is one JSON record (kind, id, payload, extra). ``replay`` re-sends the records in
order when Redis is back; feedback is replayed through the same idempotent script, so a
record sent twice lands once. The file is fsync'ed on each append (nothing acknowledged
is lost if the process dies) and truncated only after a replay went through completely.
"""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec

__all__ = ["Spool"]


class _Entry(msgspec.Struct, frozen=True):
    kind: str
    id: str
    payload: str  # base64
    extra: str | None


class Spool:
    def __init__(self, directory: Path, name: str = "spool") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{name}-{os.getpid()}.jsonl"
        self.directory = directory
        self._lock = threading.Lock()
        self._enc = msgspec.json.Encoder()
        self._dec = msgspec.json.Decoder(_Entry)
        #: decisions spooled by this process and not yet replayed (feedback for them waits too)
        self.spooled_decisions: set[str] = set()

    def append(self, kind: str, id_: str, payload: bytes, extra: bytes | None) -> None:
        entry = _Entry(
            kind,
            id_,
            base64.b64encode(payload).decode(),
            base64.b64encode(extra).decode() if extra is not None else None,
        )
        if kind == "decision":
            self.spooled_decisions.add(id_)
        line = self._enc.encode(entry) + b"\n"
        with self._lock, open(self.path, "ab") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def pending(self) -> int:
        return sum(
            1 for p in self.directory.glob("spool-*.jsonl") for line in p.open("rb") if line.strip()
        )

    async def replay(self, send: Callable[[str, str, bytes, bytes | None], Awaitable[None]]) -> int:
        """Send every spooled record (all processes' files, oldest first); return the count."""
        sent = 0
        for path in sorted(self.directory.glob("spool-*.jsonl"), key=lambda p: p.stat().st_mtime):
            claimed = path.with_suffix(".replaying")
            try:
                path.rename(claimed)
            except FileNotFoundError:
                continue
            lines = [ln for ln in claimed.read_bytes().splitlines() if ln.strip()]
            done = 0
            try:
                for line in lines:
                    e = self._dec.decode(line)
                    await send(
                        e.kind,
                        e.id,
                        base64.b64decode(e.payload),
                        base64.b64decode(e.extra) if e.extra is not None else None,
                    )
                    done += 1
                    if e.kind == "decision":
                        self.spooled_decisions.discard(e.id)
            finally:
                rest = lines[done:]
                if rest:  # put back what did not go through, ahead of newer records
                    with self._lock, open(path, "ab") as f:
                        f.write(b"\n".join(rest) + b"\n")
                claimed.unlink()
            sent += done
        return sent
