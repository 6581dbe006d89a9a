"""The local spool: durable appends, ordered idempotent replay, no line lost to a race."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest

from service.adapters.spool import Spool


class Sink:
    """Records what a replay sends; can fail after N sends, and knows which decisions exist."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.sent: list[tuple[str, str, bytes]] = []
        self.decisions: set[str] = set()
        self.fail_after = fail_after

    async def __call__(self, kind: str, id_: str, payload: bytes, extra: bytes | None) -> bool:
        if self.fail_after is not None and len(self.sent) >= self.fail_after:
            raise ConnectionError("redis gone")
        if kind == "decision":
            self.decisions.add(id_)
        elif id_ not in self.decisions:
            return False  # unknown decision (for now)
        self.sent.append((kind, id_, payload))
        return True


def replay(spool: Spool, sink: Sink) -> object:
    return asyncio.run(spool.replay(sink))


class TestReplay:
    def test_decisions_go_before_feedback_across_files(self, tmp_path: Path) -> None:
        a = Spool(tmp_path)
        b = Spool(tmp_path)
        b.path = tmp_path / "spool-999999.jsonl"  # another process's file
        b.append("feedback", "d1", b"fb", b"opened")  # written before its decision
        time.sleep(0.01)
        a.append("decision", "d1", b"dec", None)
        sink = Sink()
        result = replay(a, sink)
        assert [(k, i) for k, i, _ in sink.sent] == [("decision", "d1"), ("feedback", "d1")]
        assert result.sent == 2 and not a.has_pending()  # type: ignore[attr-defined]

    def test_a_failure_keeps_the_rest_and_the_next_replay_sends_it_once(
        self, tmp_path: Path
    ) -> None:
        s = Spool(tmp_path)
        for i in range(5):
            s.append("decision", f"d{i}", f"p{i}".encode(), None)
        s.append("feedback", "d0", b"f0", b"clicked")
        with pytest.raises(ConnectionError):
            replay(s, Sink(fail_after=2))
        assert s.has_pending() and s.pending() == 4
        sink = Sink()
        sink.decisions = {"d0", "d1"}
        replay(s, sink)
        assert [i for _, i, _ in sink.sent] == ["d2", "d3", "d4", "d0"]
        assert not s.has_pending()

    def test_unknown_feedback_waits_then_is_dropped(self, tmp_path: Path) -> None:
        s = Spool(tmp_path, defer_unknown_s=3600)
        s.append("feedback", "elsewhere", b"f", b"opened")
        r1 = replay(s, Sink())
        assert r1.deferred == 1 and s.has_pending()  # type: ignore[attr-defined]
        s.defer_unknown_s = 0.0
        r2 = replay(s, Sink())
        assert r2.dropped == 1 and not s.has_pending()  # type: ignore[attr-defined]

    def test_a_claimed_file_left_by_a_dead_replayer_is_taken_over(self, tmp_path: Path) -> None:
        s = Spool(tmp_path)
        s.append("decision", "d1", b"x", None)
        os.rename(s.path, tmp_path / "spool-4242.4242-1.replaying")  # died mid-replay
        sink = Sink()
        replay(s, sink)
        assert [i for _, i, _ in sink.sent] == ["d1"] and not s.has_pending()

    def test_records_round_trip_bytes_exactly(self, tmp_path: Path) -> None:
        s = Spool(tmp_path)
        payload = bytes(range(256))
        s.append("decision", "d1", payload, b"\x00summary")
        seen: list[tuple[bytes, bytes | None]] = []

        async def send(kind: str, id_: str, p: bytes, extra: bytes | None) -> bool:
            seen.append((p, extra))
            return True

        asyncio.run(s.replay(send))
        assert seen == [(payload, b"\x00summary")]


class TestWhichDecisionsItHolds:
    """Feedback for a spooled decision waits for it: every process of the host must know
    which decisions the spool holds, also after a restart, until they are in Redis."""

    def test_every_process_knows_until_the_replay_lands_them(self, tmp_path: Path) -> None:
        a, b = Spool(tmp_path), Spool(tmp_path)
        b.path = tmp_path / "spool-999999.jsonl"  # another worker process of the host
        a.append("decision", "d1", b"1", None)
        b.append("decision", "d2", b"2", None)
        b.append("feedback", "d9", b"f", b"opened")  # feedback is not a decision
        restarted = Spool(tmp_path)
        for s in (a, b, restarted):
            assert s.holds_decision("d1") and s.holds_decision("d2")
            assert not s.holds_decision("d9") and not s.holds_decision("unknown")
        with pytest.raises(ConnectionError):
            replay(restarted, Sink(fail_after=1))  # one decision landed, then Redis went away
        landed = "d1" if not a.holds_decision("d1") else "d2"
        kept = {"d1", "d2"} - {landed}
        assert [s.holds_decision(i) for s in (a, b) for i in sorted(kept)] == [True, True]
        replay(a, Sink())
        assert not any(s.holds_decision(i) for s in (a, b, restarted) for i in ("d1", "d2"))

    def test_it_is_derived_from_the_files_again_when_a_process_opens_the_spool(
        self, tmp_path: Path
    ) -> None:
        s = Spool(tmp_path)
        s.append("decision", "d1", b"1", None)
        s._index.execute("INSERT INTO decisions VALUES ('stale')")  # e.g. a crash mid-replay
        s.close()
        assert Spool(tmp_path).holds_decision("stale") is False
        for f in tmp_path.glob("spool.decisions.sqlite3*"):
            f.unlink()  # lost (a power loss, a cleanup): the files still say what is held
        assert Spool(tmp_path).holds_decision("d1")
        (tmp_path / "spool.decisions.sqlite3").write_bytes(b"not a database at all" * 100)
        assert Spool(tmp_path).holds_decision("d1")

    def test_a_spooled_record_does_not_depend_on_the_index(self, tmp_path: Path) -> None:
        s = Spool(tmp_path)
        s.close()  # a shutdown while a request still spools its decision
        s.append("decision", "d2", b"2", None)  # durable all the same
        assert Spool(tmp_path).holds_decision("d2")


def test_appends_racing_a_replayer_lose_nothing_and_duplicate_nothing(tmp_path: Path) -> None:
    """Four writers (each its own spool file, like worker processes) append while a fifth
    replays in a loop; every acknowledged record must be sent exactly once."""
    writers = [Spool(tmp_path) for _ in range(4)]
    for i, w in enumerate(writers):
        w.path = tmp_path / f"spool-{100 + i}.jsonl"
    per_writer = 300
    done = threading.Event()
    sink = Sink()

    def write(w: Spool, k: int) -> None:
        for n in range(per_writer):
            w.append("decision", f"w{k}-{n}", b"x", None)

    threads = [threading.Thread(target=write, args=(w, k)) for k, w in enumerate(writers)]
    replayer = Spool(tmp_path)

    async def replay_loop() -> None:
        while not done.is_set():
            await replayer.replay(sink)
            await asyncio.sleep(0)
        while replayer.has_pending():
            await replayer.replay(sink)

    for t in threads:
        t.start()
    loop_thread = threading.Thread(target=lambda: asyncio.run(replay_loop()))
    loop_thread.start()
    for t in threads:
        t.join()
    done.set()
    loop_thread.join(timeout=60)
    ids = [i for _, i, _ in sink.sent]
    assert len(ids) == len(set(ids)) == 4 * per_writer
    assert not replayer.has_pending()
    assert not [i for i in ids if writers[0].holds_decision(i)]  # all landed, none held
