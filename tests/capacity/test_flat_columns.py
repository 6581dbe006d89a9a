"""The flat tables built from the Parquet log's columns equal the ones built from its records.

:func:`decision_log.load_log` / :func:`decision_log.export_files` project the nested columns
in DuckDB; :func:`decision_log.read_log_files` + :func:`decision_log.flatten_decisions` go
through one record per row. The log here is written by the exporter's own flush (no Redis
needed: the acknowledgement is skipped), with nested fields, defaults left out, values JSON
must escape, floats DuckDB would write otherwise than msgspec, duplicates from a second
(misconfigured) exporter, and an older file without some columns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from contracts.keys import decision_stream, feedback_stream
from contracts.log_schema import DECISIONS, Origin
from contracts.records import (
    CandidatesRecord,
    ChoiceRecord,
    DecisionRecord,
    ExplorationRecord,
    FeedbackRecord,
    encode,
)
from service.exporter import Exporter
from training.measurement import decision_log

T0 = 1_794_787_200.0  # 2026-11-16T00:00:00Z
MS0 = int(T0 * 1000)


def choice(i: int, offer: str = "OFF001", channel: str = "email") -> ChoiceRecord:
    return ChoiceRecord(
        offer=offer,
        channel=channel,
        send_at=T0 + i * 600 + 3600.123456,
        local_hour=i % 24,
        p=0.01 * (i % 7),
        ev=0.2 + i,
        propensity=0.02,
        channel_score=0.3,
        hour_lift=1.1,
    )


def candidates(i: int) -> CandidatesRecord:
    offers, channels = ["OFF001", "OFF002"], ["email", "sms"]
    p_channel = [0.231225, 1.0]
    if i % 5 == 1:  # floats msgspec writes with an exponent, DuckDB not (or otherwise)
        p_channel = [1e-07, 2.5e16]
    if i % 5 == 2:  # strings JSON escapes
        offers, channels = ['OFF"1', "OFF/é"], ["e mail", "sms\n"]
    return CandidatesRecord(
        offers=offers,
        channels=channels,
        p_channel=p_channel,
        hour_lift=[1.1081, 0.86038, 1.0] + [0.5] * 21,
        p_convert=[[0.163584, 0.0623707], [0.000012, 12345.0]],
        value=[3.2186, 178.746],
        hours={channels[0]: [10, 11], channels[1]: []},
    )


def decision(i: int) -> DecisionRecord:
    did = f"{MS0 + i * 600_000:012x}{i:016x}"
    # pairs of decisions at one time (kept in log order), some a day late, one unreadable
    ts = T0 + (i // 2) * 600.5 - (86400 if i % 10 == 7 else 0) + (1e12 if i == 89 else 0)
    if i % 11 == 3:  # opted out: only the fact of the call
        return DecisionRecord(decision_id=did, ts=ts, opted_out=True, placement="campaign")
    holdout = i % 10 == 0
    c = choice(i) if i % 9 != 4 else None
    return DecisionRecord(
        decision_id=did,
        ts=ts,
        unit=f"C{i % 40:07d}" if i % 6 else None,
        known=i % 6 != 0,
        placement="campaign",
        trigger="cart" if i % 2 else None,
        experiment="nba",
        arm="holdout" if holdout else ("explore" if i % 7 == 2 else "model"),
        holdout=holdout,
        policy="explore" if i % 7 == 2 else "model",
        choice_probability=0.25 if i % 7 == 2 else 1.0,
        action=None if holdout else c,
        would_have=c if holdout else None,
        alternatives=[choice(i + 1, "OFF002"), choice(i + 2, "OFF003")][: i % 3],
        suppressed=[("no_consent", None, "sms"), ("cap", "OFF001", "ünï")][: i % 3],
        cold_start=i % 8 == 1,
        degraded=["feature_store", "model"][: i % 3],
        model_versions=[{}, {"propensity": "3"}, {"channel": "1", "propensity": "3"}][i % 3],
        policy_version="2026-11-22.1" if i % 13 else None,
        realtime={"views_1h": i % 4} if i % 2 else None,
        allocation="caller" if i % 12 == 5 else "hashed",
        candidates=candidates(i) if i % 4 != 3 else None,
        exploration=ExplorationRecord(epsilon=0.1, cost=0.01 * i, actions=12)
        if i % 7 == 2
        else None,
    )


def feedback(i: int, event: str, value: float | None, dt: float) -> FeedbackRecord:
    rec = decision(i)
    return FeedbackRecord(decision_id=rec.decision_id, event=event, ts=rec.ts + dt, value=value)  # type: ignore[arg-type]


def entries(records: list[Any], stream: Any, ms: int) -> list[tuple[str, str, bytes]]:
    return [(stream(r.decision_id), f"{ms + k}-0", encode(r)) for k, r in enumerate(records)]


@pytest.fixture
def log_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "log"
    exporter = Exporter(None, str(root))
    monkeypatch.setattr(exporter, "trim", lambda entries: None)  # no Redis to acknowledge
    records = [decision(i) for i in range(90)]
    fbs = [feedback(i, "opened", None, 7200) for i in range(0, 90, 3)]
    fbs += [feedback(i, "converted", 25.0 + i, 9000) for i in range(0, 90, 6)]
    exporter.flush(entries(records[:60], decision_stream, MS0))
    exporter.flush(entries(fbs, feedback_stream, MS0 + 1000))
    # a second exporter on the same Redis: some decisions and feedback again, later, and
    # changed (the first in log order must win)
    again = [msgspec_replace(r) for r in records[20:40]]
    exporter.flush(entries(again, decision_stream, MS0 + 3_600_000))
    fb_again = [feedback(i, "converted", 1.0, 9500) for i in range(0, 30, 6)]
    exporter.flush(entries(fb_again, feedback_stream, MS0 + 3_600_000))
    # an older file, written before some columns existed
    rows = [(Origin(int(r.decision_id[-1], 16), f"{MS0 + 7_200_000 + k}-0"), r)
            for k, r in enumerate(records[60:])]  # fmt: skip
    old = DECISIONS.table(rows).drop_columns(["allocation", "exploration", "candidates"])
    folder = root / "decisions" / "date=2026-11-16" / "hour=02"
    folder.mkdir(parents=True)
    pq.write_table(old, folder / "part-old.parquet")
    return root


def msgspec_replace(r: DecisionRecord) -> DecisionRecord:
    import msgspec

    return msgspec.structs.replace(r, arm="changed", ts=r.ts + 1.0)


def from_records(
    root: Path, since: str | None = None, until: str | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    recs, fbs = decision_log.read_log_files(root, since, until)
    d = decision_log.flatten_decisions(recs).sort_values("ts", kind="stable")
    f = decision_log.flatten_feedback(fbs).sort_values("ts", kind="stable")
    return d.reset_index(drop=True), f.reset_index(drop=True)


def test_the_columns_give_the_tables_the_records_give(log_root: Path) -> None:
    d_old, f_old = from_records(log_root)
    d_new, f_new = decision_log.load_log(log_root)
    pd.testing.assert_frame_equal(d_new, d_old)
    pd.testing.assert_frame_equal(f_new, f_old)
    assert list(d_new.columns) == list(decision_log.DECISION_COLUMNS)
    # the cases are there: deduplicated, older file read with its defaults, odd candidates
    assert len(d_new) == 90 and d_new["decision_id"].is_unique
    assert (d_new["arm"] != "changed").all()
    assert len(f_new) == 30 + 15 and set(f_new.loc[f_new["event"] == "converted", "value"]) == {
        25.0 + i for i in range(0, 90, 6)
    }
    assert d_new["allocation"].eq("hashed").sum() > 0 and d_new["explore_epsilon"].notna().any()
    cands = d_new["candidates"].dropna()
    assert cands.str.contains("1e-7").any() and cands.str.contains('OFF\\"1', regex=False).any()
    assert d_new["suppressed"].str.contains("\\u00fc", regex=False).any()


@pytest.mark.parametrize(
    ("since", "until"),
    [
        ("2026-11-16T02:00:00Z", "2026-11-16T08:00:00Z"),
        (None, "2026-11-16T03:00:00"),
        ("2027-01-01", None),
    ],
)
def test_the_same_time_range(log_root: Path, since: str | None, until: str | None) -> None:
    d_old, f_old = from_records(log_root, since, until)
    d_new, f_new = decision_log._flat_from_files(log_root, since, until)
    pd.testing.assert_frame_equal(d_new, d_old)
    pd.testing.assert_frame_equal(f_new, f_old)


def test_export_files_writes_them(log_root: Path, tmp_path: Path) -> None:
    meta = decision_log.export_files(log_root, tmp_path / "export")
    d, f = decision_log.load_log(tmp_path / "export")
    d_old, f_old = from_records(log_root)
    assert meta["decisions"] == 90
    pd.testing.assert_frame_equal(d, d_old)
    pd.testing.assert_frame_equal(f, f_old)


def test_a_log_older_than_some_columns(log_root: Path) -> None:
    """No file has ``allocation``, ``exploration`` or ``candidates``: the defaults."""
    for part in log_root.glob("decisions/*/*/part-*.parquet"):
        if part.name != "part-old.parquet":
            part.unlink()
    d_old, f_old = from_records(log_root)
    d_new, f_new = decision_log.load_log(log_root)
    pd.testing.assert_frame_equal(d_new, d_old)
    pd.testing.assert_frame_equal(f_new, f_old)
    assert len(d_new) == 30 and d_new["candidates"].isna().all()


def test_an_empty_log(tmp_path: Path) -> None:
    (tmp_path / "log" / "decisions").mkdir(parents=True)
    d, f = decision_log.load_log(tmp_path / "log")
    d_old, f_old = from_records(tmp_path / "log")
    pd.testing.assert_frame_equal(d, d_old)
    pd.testing.assert_frame_equal(f, f_old)
