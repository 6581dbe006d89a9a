"""export-log against a real Redis, then report, OPE and training rows from the export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import redis

from contracts.keys import decision_stream, decision_streams, feedback_stream, feedback_streams
from training.cli import main
from training.measurement import decision_log, ope
from training.measurement.log_training import MESSAGE_COLUMNS, append_log_rows, rows_from_log

T0 = 1_794_787_200.0  # 2026-11-16T00:00:00Z


def _choice(offer: str, channel: str, at: float, hour: int, p: float) -> dict[str, Any]:
    return {"offer": offer, "channel": channel, "send_at": at, "local_hour": hour, "p": p,
            "ev": p * 10, "propensity": p, "channel_score": 0.3, "hour_lift": 1.1}  # fmt: skip


def make_record(i: int, arm: str, offer: str | None = "OFF001") -> dict[str, Any]:
    """A decision record in the engine's format (service/engine.py DecisionEngine._record)."""
    did = f"{int((T0 + i * 600) * 1000):012x}{i:016x}"
    holdout = arm == "holdout"
    c = _choice(offer, "email", T0 + i * 600 + 3600, 10, 0.05) if offer else None
    return {
        "decision_id": did,
        "ts": T0 + i * 600,
        "unit": f"C{i % 40:07d}",
        "known": True,
        "placement": "campaign",
        "trigger": None,
        "experiment": "nba",
        "arm": arm,
        "holdout": holdout,
        "policy": arm if arm in ("popular", "explore") else "model",
        "choice_probability": 0.25 if arm == "explore" else 1.0,
        "action": None if holdout else c,
        "would_have": c if holdout else None,
        "alternatives": [c] if c else [],
        "suppressed": [["no_consent", None, "sms"]],
        "cold_start": False,
        "degraded": [],
        "model_versions": {"propensity": "3", "send_time": "2", "channel": "1"},
        "policy_version": "2026-11-22.1",
    }


@pytest.fixture
def export(redis_url: str, tmp_path: Path) -> Path:
    r = redis.Redis.from_url(redis_url)
    # only the log streams: the session's Feast rows in this database serve later tests
    r.delete(*decision_streams(), *feedback_streams())
    records = []
    for i in range(120):
        arm = {0: "holdout", 1: "popular", 2: "explore", 3: "explore"}.get(i % 10, "model")
        records.append(make_record(i, arm, None if i % 17 == 5 else "OFF001"))
    # an explore decision whose action was withdrawn after it (a concurrent cap reservation)
    gone = make_record(200, "explore", None)
    gone["suppressed"] = [["frequency_cap", "OFF001", "email"]]
    for rec in records:
        r.xadd(decision_stream(rec["decision_id"]), {"record": json.dumps(rec)})
    opted = {"decision_id": "0" * 12 + "ff" * 8, "ts": T0, "opted_out": True,
             "placement": "campaign", "policy_version": "2026-11-22.1"}  # fmt: skip
    r.xadd(decision_stream(opted["decision_id"]), {"record": json.dumps(opted)})
    r.xadd(decision_stream(gone["decision_id"]), {"record": json.dumps(gone)})
    for rec in records[::3]:
        did = rec["decision_id"]
        fb = feedback_stream(did)
        r.xadd(fb, {"record": json.dumps({"decision_id": did, "event": "opened", "value": None,
                                          "ts": rec["ts"] + 7200})})  # fmt: skip
        r.xadd(fb, {"record": json.dumps({"decision_id": did, "event": "converted",
                                          "value": 25.0, "ts": rec["ts"] + 9000})})  # fmt: skip
    r.close()
    out = tmp_path / "log"
    assert main(["export-log", "--redis-url", redis_url, "--out", str(out)]) == 0
    return out


@pytest.mark.redis
def test_export_schema(export: Path) -> None:
    d, f = decision_log.load_log(export)
    assert list(d.columns) == list(decision_log.DECISION_COLUMNS)
    assert list(f.columns) == list(decision_log.FEEDBACK_COLUMNS)
    assert len(d) == 122 and len(f) == 80
    assert d["ts"].is_monotonic_increasing  # shards merged in time order
    assert str(d["ts"].dt.tz) == "UTC" and str(d["action_send_at"].dt.tz) == "UTC"
    row = d[d["arm"] == "holdout"].iloc[0]
    assert pd.isna(row["action_offer"]) and row["would_have_offer"] == "OFF001"
    assert row["holdout"] and row["model_version_propensity"] == "3"
    assert d["opted_out"].sum() == 1
    assert json.loads(d["suppressed"].iloc[-2]) == [["no_consent", None, "sms"]]
    assert json.loads(d["suppressed"].iloc[-1]) == [["frequency_cap", "OFF001", "email"]]
    meta = json.loads((export / "export.json").read_text())
    assert meta["decisions"] == 122 and meta["policy_versions"] == ["2026-11-22.1"]
    o = decision_log.outcomes(d, f)
    assert o["converted"].sum() == 40 and o["revenue"].sum() == pytest.approx(40 * 25.0)


@pytest.mark.redis
def test_report_ope_and_training_rows(
    export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    html = tmp_path / "r.html"
    assert main(["report", "--log", str(export), "--html", str(html), "--profiles", "-"]) == 0
    out = capsys.readouterr().out
    assert "Lift vs holdout" in out and "nba" in out
    assert "<svg" in html.read_text()
    assert main(["ope", "--log", str(export), "--policy", "uniform"]) == 0
    out = capsys.readouterr().out
    assert "SNIPS" in out
    # only the explore arm's decisions (exact propensities), the withdrawn one left out
    assert "24 usable for OPE" in out and "1 withdrawn" in out
    bandit = ope.bandit_log_from_decisions(decision_log.outcomes(*decision_log.load_log(export)))
    assert len(bandit) == 24 and set(bandit["arm"]) == {"explore"}
    assert (bandit["propensity"] == 0.25).all()
    assert set(bandit["action"]) <= {"OFF001|email", "none"}

    d, f = decision_log.load_log(export)
    rows = rows_from_log(d, f, min_age_hours=1.0)
    assert list(rows.columns) == list(MESSAGE_COLUMNS)
    assert (rows["offer_id"] == "OFF001").all() and len(rows) > 0
    assert not rows["message_id"].duplicated().any()
    assert (rows["delivered"] >= rows["opened"]).all() and (
        rows["opened"] >= rows["converted"]
    ).all()
    assert set(rows["weight"]) == {1.0, 4.0}  # 1 / choice_probability
    assert rows["sent_at"].max() <= d["ts"].max()
    assert rows["local_hour"].eq(10).all()
    assert (rows["source"] == "log").all() and rows["message_id"].str.startswith("L").all()
    keep = [c for c in MESSAGE_COLUMNS if c not in ("source", "weight")]
    hist = pd.DataFrame({c: rows[c].head(2) for c in keep})
    both = append_log_rows(hist, rows)
    assert len(both) == len(rows) + 2
    assert both["sent_at"].is_monotonic_increasing
    assert (
        np.isclose(both.loc[both["message_id"].isin(hist["message_id"]), "weight"], 1.0).sum() >= 2
    )
    # the history's rows are marked by their source, not their ids (these begin with "L" too)
    assert (both["source"] == "history").sum() == 2 and (both["source"] == "log").sum() == len(rows)
    out_path = tmp_path / "extra.parquet"
    assert main(["log-to-training", "--log", str(export), "--out", str(out_path)]) == 0
    assert len(pd.read_parquet(out_path)) <= len(rows)


def test_epoch_seconds_convert_exactly_and_bad_values_become_null() -> None:
    raw = pd.Series(
        [1763283600.25, None, np.nan, np.inf, -np.inf, 1e300, "not a time", 0.0], dtype=object
    )
    ts, bad = decision_log.epoch_seconds_to_utc(raw)
    assert str(ts.dtype) == "datetime64[ns, UTC]"
    assert ts.iloc[0] == pd.Timestamp("2025-11-16T09:00:00.250", tz="UTC")
    assert ts.iloc[7] == pd.Timestamp("1970-01-01", tz="UTC")
    assert ts.iloc[1:7].isna().all()
    assert bad == 4  # inf, -inf, 1e300 and the string; None and NaN are plain nulls
