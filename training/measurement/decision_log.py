"""Read the service's decision log (the exporter's Parquet files) as flat tables; export it.

The log lives in Parquet files under ``NEXTBEST_LOG_URL`` (a folder or any fsspec URL),
written by the exporter (``python -m service.exporter``, :mod:`service.exporter`) with the
columns of :mod:`contracts.log_schema` (the record structs, nested). :func:`load_log` reads
either that log root (DuckDB over ``decisions/**/*.parquet``, optionally a time range; rows
deduplicated by decision id and by (decision id, event), a belt to the exporter's braces) or
an export folder, and returns the flat tables below. Redis keeps only the backlog the
exporter has not drained yet; ``export-log --redis-url`` still reads that (a service run
without an exporter: tests, a laptop).

`python -m training export-log [--from LOG] [--since T] [--until T] --out DIR` writes three
files to ``DIR``:

``decisions.parquet``, one row per decision record (the 16 shards merged, ordered by ``ts``;
ties keep stream-entry order):

| column | type | meaning |
|---|---|---|
| decision_id | string | id of the decision (feedback refers to it) |
| ts | timestamp[UTC] | when the decision was made (the request's ``now``) |
| unit | string | customer id or anonymous id (null for opted-out records) |
| known | bool | an identified customer (``customer_id`` given) |
| opted_out | bool | the customer opted out: only the fact of the call is logged |
| placement, trigger | string | request context |
| experiment, arm | string | allocation (``arm == "holdout"`` for the global holdout) |
| holdout | bool | the unit got the control action (no message) |
| policy | string | ``model``, ``popular`` or ``explore`` |
| choice_probability | float | P(chosen action given context) under the logging policy (1 if deterministic) |
| action_offer, action_channel | string | the action taken (null: no action) |
| action_send_at | timestamp[UTC] | when the message is to be sent |
| action_local_hour | int | the customer's local hour of ``action_send_at`` (-1 if none) |
| action_p, action_ev | float | predicted conversion probability and expected value of the action |
| would_have_offer, would_have_channel | string | holdout only: the treated action it did not get |
| would_have_local_hour, would_have_p, would_have_ev | int/float | idem |
| n_alternatives | int | number of next-best alternatives logged |
| suppressed | string | JSON list of ``[reason, offer, channel]`` |
| cold_start | bool | population priors were used |
| degraded | string | comma-separated degradation flags ("" if none) |
| model_version_propensity / _send_time / _channel | string | model versions used |
| model_versions | string | JSON object of all model versions (by model kind) |
| policy_version | string | version of ``policy.yaml`` |
| allocation | string | ``hashed`` (the unit's bucket) or ``caller`` (the request named the arm) |
| explore_epsilon, explore_cost | float | explore arm: the exploration rate used and the expected value it gave up |
| candidates | string | JSON :class:`contracts.records.CandidatesRecord`: every candidate's factored score |

``feedback.parquet``: ``decision_id`` (string), ``event`` (``delivered``, ``opened``,
``clicked``, ``converted``, ``dismissed``), ``value`` (float, null unless given, e.g. the
revenue of a conversion), ``ts`` (timestamp[UTC]).

``export.json``: row counts, the time range and when the export was made.

For lift measurement the callers must report ``converted`` feedback for *holdout* decisions
too (a purchase in the attribution window), otherwise holdout conversions read as zero.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd

from contracts.models import KINDS as MODEL_KINDS
from contracts.records import DecisionRecord, FeedbackRecord

_log = logging.getLogger(__name__)

__all__ = [
    "DECISION_COLUMNS",
    "FEEDBACK_COLUMNS",
    "export_files",
    "export_log",
    "flatten_decisions",
    "flatten_feedback",
    "is_log_root",
    "load_log",
    "outcomes",
    "read_log_files",
]

DECISION_COLUMNS: dict[str, str] = {
    "decision_id": "string",
    "ts": "datetime64[ns, UTC]",
    "unit": "string",
    "known": "bool",
    "opted_out": "bool",
    "placement": "string",
    "trigger": "string",
    "experiment": "string",
    "arm": "string",
    "holdout": "bool",
    "policy": "string",
    "choice_probability": "float64",
    "action_offer": "string",
    "action_channel": "string",
    "action_send_at": "datetime64[ns, UTC]",
    "action_local_hour": "int64",
    "action_p": "float64",
    "action_ev": "float64",
    "would_have_offer": "string",
    "would_have_channel": "string",
    "would_have_local_hour": "int64",
    "would_have_p": "float64",
    "would_have_ev": "float64",
    "n_alternatives": "int64",
    "suppressed": "string",
    "cold_start": "bool",
    "degraded": "string",
    **{f"model_version_{k}": "string" for k in MODEL_KINDS},
    "model_versions": "string",
    "policy_version": "string",
    "allocation": "string",
    "explore_epsilon": "float64",
    "explore_cost": "float64",
    "candidates": "string",
}
FEEDBACK_COLUMNS: dict[str, str] = {
    "decision_id": "string",
    "event": "string",
    "value": "float64",
    "ts": "datetime64[ns, UTC]",
}


def _flat_one(r: DecisionRecord) -> dict[str, Any]:
    a, w = r.action, r.would_have
    row: dict[str, Any] = {
        "decision_id": r.decision_id,
        "ts": r.ts,
        "unit": r.unit,
        "known": r.known,
        "opted_out": r.opted_out,
        "placement": r.placement,
        "trigger": r.trigger,
        "experiment": r.experiment,
        "arm": r.arm,
        "holdout": r.holdout,
        "policy": r.policy,
        "choice_probability": r.choice_probability,
        "action_offer": a.offer if a else None,
        "action_channel": a.channel if a else None,
        "action_send_at": a.send_at if a else None,
        "action_local_hour": a.local_hour if a else -1,
        "action_p": a.p if a else None,
        "action_ev": a.ev if a else None,
        "would_have_offer": w.offer if w else None,
        "would_have_channel": w.channel if w else None,
        "would_have_local_hour": w.local_hour if w else -1,
        "would_have_p": w.p if w else None,
        "would_have_ev": w.ev if w else None,
        "n_alternatives": len(r.alternatives),
        "suppressed": json.dumps([list(s) for s in r.suppressed]),
        "cold_start": r.cold_start,
        "degraded": ",".join(r.degraded),
        "model_versions": json.dumps(r.model_versions, sort_keys=True),
        "policy_version": r.policy_version,
        "allocation": r.allocation,
        "explore_epsilon": r.exploration.epsilon if r.exploration else None,
        "explore_cost": r.exploration.cost if r.exploration else None,
        "candidates": msgspec.json.encode(r.candidates).decode() if r.candidates else None,
    }
    for k in MODEL_KINDS:
        row[f"model_version_{k}"] = r.model_versions.get(k)
    return row


#: epoch seconds beyond this (year ~5138) cannot be a decision or feedback time
_MAX_EPOCH_S = 1e11


def epoch_seconds_to_utc(values: pd.Series) -> tuple[pd.Series, int]:
    """Epoch seconds (float, possibly null) -> tz-aware UTC timestamps, and how many were bad.

    The conversion is done here rather than by ``pd.to_datetime(unit="s")``, which on some
    inputs raises ``FloatingPointError: overflow`` from inside its own vectorised cast: a
    value that is not a number, not finite or out of range becomes NaT and is counted.
    """
    num = pd.to_numeric(values, errors="coerce").astype("float64").to_numpy()
    ok = np.isfinite(num) & (np.abs(num) < _MAX_EPOCH_S)
    bad = int((~ok & ~pd.isna(values).to_numpy()).sum())
    ns = np.full(len(num), np.datetime64("NaT"), dtype="datetime64[ns]")
    whole = np.floor(num[ok])
    micros = np.round((num[ok] - whole) * 1e6).astype("int64")  # float seconds hold ~1 us
    ns[ok] = (whole.astype("int64") * 1_000_000_000 + micros * 1000).view("datetime64[ns]")
    return pd.Series(ns, index=values.index).dt.tz_localize("UTC"), bad


def _typed(df: pd.DataFrame, schema: dict[str, str], time_cols: tuple[str, ...]) -> pd.DataFrame:
    out = pd.DataFrame({c: (df[c] if c in df.columns else None) for c in schema}, index=df.index)
    for c, dtype in schema.items():
        if c in time_cols:
            out[c], bad = epoch_seconds_to_utc(out[c])
            if bad:
                _log.warning("decision log: %d unreadable %s values exported as null", bad, c)
        elif dtype == "int64":
            out[c] = pd.to_numeric(out[c]).fillna(-1).astype("int64")
        elif dtype == "float64":
            out[c] = pd.to_numeric(out[c]).astype("float64")
        else:
            out[c] = out[c].astype(dtype)  # type: ignore[call-overload]
    return out.reset_index(drop=True)


def flatten_decisions(records: list[DecisionRecord]) -> pd.DataFrame:
    """Decision records (as the engine appends them) -> the documented flat table."""
    df = pd.DataFrame([_flat_one(r) for r in records], columns=list(DECISION_COLUMNS))
    return _typed(df, DECISION_COLUMNS, ("ts", "action_send_at"))


def flatten_feedback(records: list[FeedbackRecord]) -> pd.DataFrame:
    df = pd.DataFrame(
        [(r.decision_id, r.event, r.value, r.ts) for r in records], columns=list(FEEDBACK_COLUMNS)
    )
    return _typed(df, FEEDBACK_COLUMNS, ("ts",))


def export_log(redis_url: str, out: Path, cluster: bool | None = None) -> dict[str, Any]:
    """Every decision and feedback record still in Redis's streams -> an export folder.

    With the exporter running the streams hold only its backlog (read the Parquet log:
    :func:`export_files`); this reads a service's log where no exporter ran.
    ``cluster`` (default: NEXTBEST_REDIS_CLUSTER): ``redis_url`` names a Redis Cluster node.
    """
    from service.adapters.redis_store import read_decisions, read_feedback, sync_client
    from training.settings import redis_cluster

    client = sync_client(redis_url, redis_cluster() if cluster is None else cluster)
    try:
        decisions = flatten_decisions(read_decisions(client))
        feedback = flatten_feedback(read_feedback(client))
        decisions = decisions.sort_values("ts", kind="stable").reset_index(drop=True)
        feedback = feedback.sort_values("ts", kind="stable").reset_index(drop=True)
    finally:
        client.close()
    return _write_export(decisions, feedback, out)


def _write_export(decisions: pd.DataFrame, feedback: pd.DataFrame, out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    decisions.to_parquet(out / "decisions.parquet", index=False)
    feedback.to_parquet(out / "feedback.parquet", index=False)
    meta: dict[str, Any] = {
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "decisions": len(decisions),
        "feedback": len(feedback),
        "first_decision": decisions["ts"].min().isoformat() if len(decisions) else None,
        "last_decision": decisions["ts"].max().isoformat() if len(decisions) else None,
        "policy_versions": sorted(decisions["policy_version"].dropna().unique().tolist()),
    }
    (out / "export.json").write_text(json.dumps(meta, indent=2))
    return meta


# ------------------------------------------------------------ the Parquet log
def _is_url(source: str | Path) -> bool:
    return isinstance(source, str) and "://" in source and not source.startswith("file://")


def is_log_root(source: str | Path) -> bool:
    """Is ``source`` the exporter's log root (``decisions/`` of partitions), not an export?"""
    if _is_url(source):
        return True
    p = Path(str(source).removeprefix("file://"))
    return (p / "decisions").is_dir() and not (p / "decisions.parquet").exists()


def _epoch(t: str | datetime | pd.Timestamp | None) -> float | None:
    if t is None:
        return None
    ts = pd.Timestamp(t)
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return float(ts.timestamp())


def _query(con: Any, glob: str, key: str, since: float | None, until: float | None) -> Any:
    """Arrow table of the files matching ``glob``: one row per ``key``, in log order."""
    where = []
    if since is not None:
        where.append(f"ts >= {since!r}")
    if until is not None:
        where.append(f"ts < {until!r}")
    cond = f"WHERE {' AND '.join(where)}" if where else ""
    sql = (
        f"SELECT * FROM read_parquet('{glob}', union_by_name = true, hive_partitioning = false) "
        f"{cond} QUALIFY row_number() OVER (PARTITION BY {key} "
        "ORDER BY logged_at, shard, stream_id) = 1 ORDER BY logged_at, shard, stream_id"
    )
    return con.sql(sql).fetch_arrow_table()


def read_log_files(
    source: str | Path,
    since: str | datetime | pd.Timestamp | None = None,
    until: str | datetime | pd.Timestamp | None = None,
) -> tuple[list[DecisionRecord], list[FeedbackRecord]]:
    """The records of the exporter's Parquet log at ``source`` (a folder or fsspec URL),
    decisions with ``since <= ts < until`` (feedback: its own ``ts``), in log order;
    duplicates (none are written; a second exporter misconfigured on one Redis could) are
    dropped by decision id and by (decision id, event)."""
    import duckdb

    from contracts.log_schema import DECISIONS, FEEDBACK
    from service.exporter import log_filesystem

    fs, root = log_filesystem(str(source))
    con = duckdb.connect()
    try:
        if _is_url(source):
            con.register_filesystem(fs)
            prefix = f"{str(source).split('://', 1)[0]}://{root}"
        else:
            prefix = root
        lo, hi = _epoch(since), _epoch(until)
        out: list[Any] = []
        for table, key in ((DECISIONS, "decision_id"), (FEEDBACK, "decision_id, event")):
            if not fs.glob(f"{root}/{table.name}/**/*.parquet"):
                out.append([])
                continue
            arrow = _query(con, f"{prefix}/{table.name}/**/*.parquet", key, lo, hi)
            out.append(table.records(arrow))
    finally:
        con.close()
    return out[0], out[1]


def _flat_from_files(
    source: str | Path,
    since: str | datetime | pd.Timestamp | None = None,
    until: str | datetime | pd.Timestamp | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    recs, fbs = read_log_files(source, since, until)
    decisions = flatten_decisions(recs).sort_values("ts", kind="stable").reset_index(drop=True)
    feedback = flatten_feedback(fbs).sort_values("ts", kind="stable").reset_index(drop=True)
    return decisions, feedback


def export_files(
    source: str | Path,
    out: Path,
    since: str | datetime | pd.Timestamp | None = None,
    until: str | datetime | pd.Timestamp | None = None,
) -> dict[str, Any]:
    """The exporter's Parquet log (``source``: NEXTBEST_LOG_URL) -> an export folder."""
    return _write_export(*_flat_from_files(source, since, until), out)


def load_log(path: Path | str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(decisions, feedback) as flat tables from the exporter's log root (a folder or an
    fsspec URL: the Parquet log) or from an export folder (feedback may be missing: empty)."""
    if is_log_root(path):
        return _flat_from_files(path)
    path = Path(path)
    decisions = pd.read_parquet(path / "decisions.parquet")
    fb_path = path / "feedback.parquet"
    if fb_path.exists():
        feedback = pd.read_parquet(fb_path)
    else:
        feedback = pd.DataFrame({c: pd.Series(dtype="object") for c in FEEDBACK_COLUMNS})
    return decisions, feedback


def outcomes(decisions: pd.DataFrame, feedback: pd.DataFrame) -> pd.DataFrame:
    """Decisions with one outcome flag per feedback event and ``revenue`` (sum of converted value).

    Adds boolean ``delivered``, ``opened``, ``clicked``, ``converted``, ``dismissed`` and
    float ``revenue``. A decision without feedback has all flags False and revenue 0.
    """
    out = decisions.copy()
    events = ("delivered", "opened", "clicked", "converted", "dismissed")
    fb = feedback[feedback["decision_id"].isin(out["decision_id"])]
    for e in events:
        ids = set(fb.loc[fb["event"] == e, "decision_id"].astype(str))
        out[e] = out["decision_id"].astype(str).isin(ids).to_numpy()
    conv = fb[fb["event"] == "converted"]
    rev = conv.groupby(conv["decision_id"].astype(str))["value"].sum(min_count=1)
    out["revenue"] = (
        out["decision_id"].astype(str).map(rev).astype("float64").fillna(0.0).to_numpy()
    )
    out["revenue"] = np.where(out["converted"], out["revenue"], 0.0)
    return out
