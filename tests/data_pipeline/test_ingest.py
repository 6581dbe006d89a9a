"""Ingest: every kind of bad row is rejected with its reason and counted; a missing column
is a clear error naming table and column; nothing is dropped silently."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from training.cli.parser import main
from training.ingest import IngestError, ingest

AS_OF = datetime(2026, 11, 16, tzinfo=UTC)
CHANNELS = ("email", "push", "sms", "in_app", "web")


def ts(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz="UTC")


def customers() -> pd.DataFrame:
    rows = [
        ("C1", "2026-01-01T00:00:00Z", "Europe/Paris"),
        ("C2", "2026-02-01T00:00:00Z", "America/New_York"),
        ("C3", "2026-03-01T00:00:00Z", None),  # no time zone: allowed (UTC)
        ("C2", "2026-04-01T00:00:00Z", "Europe/Paris"),  # duplicate id
        ("C5", "2027-01-01T00:00:00Z", "Europe/Paris"),  # signs up in the future
        ("C6", "2026-01-01T00:00:00Z", "Mars/Olympus_Mons"),  # invalid time zone
        ("C7", "not a date", "Europe/Paris"),  # mistyped value
    ]
    df = pd.DataFrame(rows, columns=["customer_id", "signup_at", "timezone"])
    for ch in ("email", "push", "sms"):
        df[f"consent_{ch}"] = ["true", "false", "1", "0", "yes", "no", "true"]
    df["loyalty_tier"] = "gold"  # an attribute: kept
    return df


def offers() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "offer_id": ["O1", "O2", "O3", "O4"],
            "name": ["a", "b", "c", "d"],
            "category": ["shoes", "books", "shoes", "Bad Name"],
            "price": [10.0, 20.0, -1.0, 5.0],  # O3: price <= 0
            "margin": [0.3, 0.4, 0.2, 0.2],
            "valid_from": [ts("2026-01-01")] * 4,
            "valid_to": [ts("2027-01-01")] * 4,
        }
    )


def events() -> pd.DataFrame:
    rows = [
        ("E1", "C1", None, "view", "O1", "2026-05-01", 0.0),
        ("E2", None, "A9", "view", "O2", "2026-05-01", 0.0),  # anonymous: fine
        ("E3", "C1", None, "purchase", "O1", "2026-05-02", 10.0),
        ("E3", "C1", None, "purchase", "O1", "2026-05-03", 10.0),  # duplicate id
        ("E5", "C1", None, "view", "O1", "2030-01-01", 0.0),  # future
        ("E6", "C1", None, "view", "O99", "2026-05-01", 0.0),  # unknown offer
        ("E7", "C1", None, "teleport", "O1", "2026-05-01", 0.0),  # unknown type
        ("E8", "C2", None, "view", "O1", "2026-01-15", 0.0),  # before C2's sign-up
        ("E9", "C404", None, "view", "O1", "2026-05-01", 0.0),  # unknown customer
        ("E10", None, None, "view", "O1", "2026-05-01", 0.0),  # nobody
        ("E11", "C1", None, "purchase", "O1", "2026-05-01", -3.0),  # negative value
        ("E12", "C1", None, "view", "O3", "2026-05-01", 0.0),  # offer that was rejected
    ]
    cols = ["event_id", "customer_id", "anonymous_id", "type", "offer_id", "timestamp", "value"]
    df = pd.DataFrame(rows, columns=cols)
    df["category"] = None  # taken from the offer
    return df


def messages() -> pd.DataFrame:
    rows = [
        ("M1", "C1", "O1", "email", "2026-05-01T08:00:00Z", True, True, False),
        ("M2", "C1", "O1", "pigeon", "2026-05-01T08:00:00Z", True, False, False),  # channel
        ("M3", "C1", "O1", "email", "2026-05-01T08:00:00Z", False, True, False),  # opened
        ("M4", "C404", "O1", "email", "2026-05-01T08:00:00Z", True, False, False),  # customer
        ("M5", "C1", "O99", "email", "2026-05-01T08:00:00Z", True, False, False),  # offer
        ("M6", "C2", "O2", "sms", "2026-07-01T16:00:00Z", True, True, True),
    ]
    cols = ["message_id", "customer_id", "offer_id", "channel", "sent_at", "delivered", "opened"]
    df = pd.DataFrame(rows, columns=[*cols, "converted"])
    return df


def write(source: Path, **tables: pd.DataFrame) -> Path:
    source.mkdir(parents=True, exist_ok=True)
    base = {"customers": customers(), "offers": offers(), "events": events(),
            "messages": messages(), **tables}  # fmt: skip
    for name, df in base.items():
        if name == "customers":  # one table as CSV, the others as Parquet
            df.to_csv(source / f"{name}.csv", index=False)
        else:
            df.to_parquet(source / f"{name}.parquet", index=False)
    return source


def test_each_bad_row_is_rejected_with_its_reason(tmp_path: Path) -> None:
    source = write(tmp_path / "src")
    data = tmp_path / "data"
    report = ingest(source, data, as_of=AS_OF)
    t = report.tables
    assert t["customers"].checks == {
        "bad_type:signup_at": 1,
        "duplicate_id": 1,
        "future_timestamp:signup_at": 1,
        "invalid_timezone": 1,
    }
    assert (t["customers"].rows, t["customers"].accepted) == (7, 3)
    assert t["customers"].extra_columns == ["loyalty_tier"]
    assert t["offers"].checks == {"invalid_value:category": 1, "invalid_value:price": 1}
    assert t["events"].checks == {
        "before_signup": 1,
        "duplicate_id": 1,
        "future_timestamp:timestamp": 1,
        "invalid_value:value": 1,
        "missing_value:customer_id": 1,
        "unknown_customer": 1,
        "unknown_event_type": 1,
        "unknown_offer": 2,
    }
    assert (t["events"].rows, t["events"].accepted) == (12, 3)
    assert t["messages"].checks == {
        "inconsistent_outcome": 1,
        "unknown_channel": 1,
        "unknown_customer": 1,
        "unknown_offer": 1,
    }

    # nothing dropped silently: every row is in raw/ or in rejected/, with a reason
    for name, tr in t.items():
        raw = pd.read_parquet(data / "raw" / f"{name}.parquet")
        rej = pd.read_parquet(data / "rejected" / f"{name}.parquet")
        assert len(raw) + len(rej) == tr.rows, name
        assert rej["reason"].str.len().gt(0).all(), name
    rej = pd.read_parquet(data / "rejected" / "events.parquet").set_index("event_id")
    assert rej.loc["E8", "reason"] == "before_signup"
    assert rej.loc["E12", "reason"] == "unknown_offer"
    assert rej.loc["E5", "reason"] == "future_timestamp:timestamp"
    cust = pd.read_parquet(data / "rejected" / "customers.parquet").set_index("customer_id")
    assert cust.loc["C6", "reason"] == "invalid_timezone"

    # the accepted rows are typed, attributes kept, categories from the offers
    raw = pd.read_parquet(data / "raw" / "customers.parquet")
    assert str(raw["signup_at"].dtype) == "datetime64[us, UTC]"
    assert raw["consent_email"].dtype == bool and raw["consent_web"].all()
    assert raw["loyalty_tier"].eq("gold").all()
    ev = pd.read_parquet(data / "raw" / "events.parquet").set_index("event_id")
    assert ev.loc["E1", "category"] == "shoes"
    msgs = pd.read_parquet(data / "raw" / "messages.parquet").set_index("message_id")
    # local hour from the customer's zone, with daylight saving time: New York is UTC-4 in July
    assert msgs.loc["M6", "local_hour"] == 12
    assert msgs.loc["M1", "local_hour"] == 10  # Paris, UTC+2 in May
    vocab = json.loads((data / "vocabulary.json").read_text())
    assert vocab["categories"] == ["shoes", "books"]
    assert vocab["channels"] == list(CHANNELS)
    saved = json.loads((data / "ingest_report.json").read_text())
    assert saved["tables"]["events"]["rejected"] == 9


def test_missing_required_column_names_table_and_column(tmp_path: Path) -> None:
    source = write(tmp_path / "src", events=events().drop(columns=["timestamp"]))
    with pytest.raises(IngestError, match=r"table 'events'.*missing required column 'timestamp'"):
        ingest(source, tmp_path / "data", as_of=AS_OF)


def test_missing_consent_column_of_an_outbound_channel(tmp_path: Path) -> None:
    source = write(tmp_path / "src", customers=customers().drop(columns=["consent_sms"]))
    with pytest.raises(IngestError, match="consent_sms"):
        ingest(source, tmp_path / "data", as_of=AS_OF)


def test_a_wholly_mistyped_column_is_an_error(tmp_path: Path) -> None:
    bad = offers().assign(price=["cheap", "dear", "free", "n/a"])
    source = write(tmp_path / "src", offers=bad)
    with pytest.raises(IngestError, match=r"table 'offers'.*'price' should be float"):
        ingest(source, tmp_path / "data", as_of=AS_OF)


def test_cli_exit_code_and_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write(tmp_path / "src", messages=messages().drop(columns=["channel"]))
    rc = main(["ingest", "--source", str(source), "--data", str(tmp_path / "d"),
               "--as-of", AS_OF.isoformat()])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err
    assert "table 'messages'" in err and "'channel'" in err and "Traceback" not in err
    source = write(tmp_path / "src2")
    rc = main(["ingest", "--source", str(source), "--data", str(tmp_path / "d"),
               "--as-of", AS_OF.isoformat()])  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out
    assert "before_signup" in out and "rejected" in out


def test_bad_rows_do_not_crash_the_feature_step(tmp_path: Path) -> None:
    from training.features import compute_features

    source = write(tmp_path / "src")
    data = tmp_path / "data"
    ingest(source, data, as_of=AS_OF)
    run = compute_features(data)
    assert run.rows["customer_profile"] == 3
    assert run.rows["offer_catalogue"] == 2
    beh = pd.read_parquet(data / "features" / "customer_behaviour.parquet")
    assert set(beh.columns) >= {"views_shoes_30d", "views_books_30d", "frequency_90d"}
