"""Read the service's decision log (the exporter's Parquet files) as flat tables; export it.

The log lives in Parquet files under ``NEXTBEST_LOG_URL`` (a folder or any fsspec URL),
written by the exporter (``python -m service.exporter``, :mod:`service.exporter`) with the
columns of :mod:`contracts.log_schema` (the record structs, nested). :func:`load_log` reads
either that log root (DuckDB over ``decisions/**/*.parquet``, optionally a time range; rows
deduplicated by decision id and by (decision id, event), a belt to the exporter's braces) or
an export folder, and returns the flat tables below. From the log root the tables are built
from the columns (DuckDB projects the nested fields; no Python object per record: a 30-minute
soak of 871,721 decisions loads in about 2.5 GB); :func:`read_log_files` gives the records
themselves, one object each, for the callers that need them. Redis keeps only the backlog the
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


def _where(since: float | None, until: float | None) -> str:
    where = []
    if since is not None:
        where.append(f"ts >= {since!r}")
    if until is not None:
        where.append(f"ts < {until!r}")
    return f"WHERE {' AND '.join(where)}" if where else ""


def _log_sql(select: str, glob: str, key: str, since: float | None, until: float | None) -> str:
    """SQL: ``select`` over the files matching ``glob``, one row per ``key``, in log order."""
    return (
        f"SELECT {select} FROM read_parquet('{glob}', union_by_name = true, "
        f"hive_partitioning = false) {_where(since, until)} QUALIFY row_number() OVER "
        f"(PARTITION BY {key} ORDER BY logged_at, shard, stream_id) = 1 "
        "ORDER BY logged_at, shard, stream_id"
    )


def _query(con: Any, glob: str, key: str, since: float | None, until: float | None) -> Any:
    """Arrow table of the files matching ``glob``: one row per ``key``, in log order."""
    return con.sql(_log_sql("*", glob, key, since, until)).to_arrow_table()


class _LogFiles:
    """A DuckDB connection over the log root at ``source`` (a folder or fsspec URL)."""

    def __init__(self, source: str | Path) -> None:
        import duckdb

        from service.exporter import log_filesystem

        self.fs, self.root = log_filesystem(str(source))
        self.con = duckdb.connect()
        if _is_url(source):
            self.con.register_filesystem(self.fs)
            self.prefix = f"{str(source).split('://', 1)[0]}://{self.root}"
        else:
            self.prefix = self.root

    def glob(self, name: str) -> str | None:
        """The files of table ``name`` (``decisions`` / ``feedback``); None if there are none."""
        if not self.fs.glob(f"{self.root}/{name}/**/*.parquet"):
            return None
        return f"{self.prefix}/{name}/**/*.parquet"

    def columns(self, glob: str) -> set[str]:
        rel = self.con.sql(
            f"DESCRIBE SELECT * FROM read_parquet('{glob}', union_by_name = true, "
            "hive_partitioning = false)"
        )
        return {str(row[0]) for row in rel.fetchall()}

    def close(self) -> None:
        self.con.close()


def read_log_files(
    source: str | Path,
    since: str | datetime | pd.Timestamp | None = None,
    until: str | datetime | pd.Timestamp | None = None,
) -> tuple[list[DecisionRecord], list[FeedbackRecord]]:
    """The records of the exporter's Parquet log at ``source`` (a folder or fsspec URL),
    decisions with ``since <= ts < until`` (feedback: its own ``ts``), in log order;
    duplicates (none are written; a second exporter misconfigured on one Redis could) are
    dropped by decision id and by (decision id, event).

    One Python object per row: for the flat tables use :func:`load_log` /
    :func:`export_files`, which build them from the columns."""
    from contracts.log_schema import DECISIONS, FEEDBACK

    files = _LogFiles(source)
    try:
        lo, hi = _epoch(since), _epoch(until)
        out: list[Any] = []
        for table, key in ((DECISIONS, "decision_id"), (FEEDBACK, "decision_id, event")):
            glob = files.glob(table.name)
            if glob is None:
                out.append([])
                continue
            arrow = _query(files.con, glob, key, lo, hi)
            out.append(table.records(arrow))
    finally:
        files.close()
    return out[0], out[1]


# The flat tables straight from the columns: DuckDB projects the nested fields (no record
# object per row). What the records would have turned into Python values is mapped once per
# distinct value (``suppressed``, ``degraded``, ``model_versions``); ``candidates`` is written
# as JSON by DuckDB where its text is provably the one msgspec writes (identifier strings,
# plain decimals), by msgspec from the record otherwise.

#: JSON text of a list of strings that needs no escaping (msgspec and DuckDB agree)
_PLAIN_STRINGS = r"""'[^A-Za-z0-9_.:,"\[\]-]'"""
#: JSON text of floats DuckDB may write otherwise than msgspec: exponents, NaN/Infinity,
#: 16+ integer digits (msgspec: 1e16), below 1e-5 (msgspec: 1e-6)
_ODD_FLOATS = r"""'[eENI]|(^|[\[,-])[0-9]{16}|0\.00000'"""
#: JSON text of a ``dict[str, list[int]]`` exactly as msgspec writes it
_KEY_INTS = r'"[A-Za-z0-9_.:-]*":\[(-?[0-9]+(,-?[0-9]+)*)?\]'
_PLAIN_DICT = f"'^\\{{({_KEY_INTS}(,{_KEY_INTS})*)?\\}}$'"


def _candidates_sql(col: str) -> tuple[str, str]:
    """(JSON of ``col`` as msgspec encodes :class:`CandidatesRecord`, when DuckDB's text
    for it may differ) as SQL expressions."""
    import msgspec.inspect as mi

    from contracts.records import CandidatesRecord

    info = mi.type_info(CandidatesRecord)
    assert isinstance(info, mi.StructType)
    parts: list[str] = []
    odd: list[str] = []
    for i, f in enumerate(info.fields):
        assert f.required, f"CandidatesRecord.{f.name}: omitted defaults are not handled"
        ref = f"{col}.{f.encode_name}"
        t, depth = f.type, 0
        while isinstance(t, mi.ListType):
            t, depth = t.item_type, depth + 1
        if depth and isinstance(t, mi.StrType):
            text = f"to_json({ref})"
            odd.append(f"regexp_matches({text}::VARCHAR, {_PLAIN_STRINGS})")
        elif depth and isinstance(t, mi.FloatType):
            text = f"to_json({ref})"
            odd.append(f"regexp_matches({text}::VARCHAR, {_ODD_FLOATS})")
        elif isinstance(f.type, mi.DictType):  # stored as msgspec's JSON text
            text = ref
            odd.append(f"NOT regexp_matches({ref}, {_PLAIN_DICT})")
        else:
            raise TypeError(f"CandidatesRecord.{f.name}: {f.type} has no SQL JSON form")
        sep = "{" if i == 0 else ","
        parts.append(f"'{sep}\"{f.encode_name}\":' || {text}::VARCHAR")
    return " || ".join([*parts, "'}'"]), f"({' OR '.join(odd)})"


def _per_value(column: Any, fn: Any) -> Any:
    """``fn`` applied once per distinct value of an Arrow string column (no nulls)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    enc = pc.dictionary_encode(column).combine_chunks()
    mapped = pa.array([fn(v) for v in enc.dictionary.to_pylist()], type=pa.string())
    return mapped.take(enc.indices)


def _flat_select(present: set[str]) -> str:
    """SQL select list: the flat decision columns (and helpers) from the log's columns."""

    def col(name: str, default: str = "NULL") -> str:
        if name not in present:
            return default
        return name if default == "NULL" else f"COALESCE({name}, {default})"

    def sub(struct: str, field: str) -> str:
        return f"{struct}.{field}" if struct in present else "NULL"

    exprs = {
        "decision_id": col("decision_id"),
        "ts": col("ts"),
        "unit": col("unit"),
        "known": col("known", "false"),
        "opted_out": col("opted_out", "false"),
        "placement": col("placement"),
        "trigger": col("trigger"),
        "experiment": col("experiment"),
        "arm": col("arm"),
        "holdout": col("holdout", "false"),
        "policy": col("policy"),
        "choice_probability": col("choice_probability", "1.0"),
    }
    for prefix, struct in (("action", "action"), ("would_have", "would_have")):
        for field in ("offer", "channel", "send_at", "local_hour", "p", "ev"):
            if prefix == "would_have" and field == "send_at":
                continue
            e = sub(struct, field)
            exprs[f"{prefix}_{field}"] = f"COALESCE({e}, -1)" if field == "local_hour" else e
    exprs |= {
        "n_alternatives": f"COALESCE(len({col('alternatives')}), 0)",
        "suppressed_json": f"COALESCE(to_json({col('suppressed')})::VARCHAR, '[]')",
        "cold_start": col("cold_start", "false"),
        "degraded_json": f"COALESCE(to_json({col('degraded')})::VARCHAR, '[]')",
        "model_versions_json": col("model_versions", "'{}'"),
        "policy_version": col("policy_version"),
        "allocation": col("allocation", "'hashed'"),
        "explore_epsilon": sub("exploration", "epsilon"),
        "explore_cost": sub("exploration", "cost"),
    }
    if "candidates" in present:
        text, odd = _candidates_sql("candidates")
        exprs["candidates"] = f"CASE WHEN NOT {odd} THEN {text} END"
        exprs["candidates_odd"] = f"CASE WHEN {odd} THEN candidates END"
    else:
        exprs["candidates"] = "NULL::VARCHAR"
    exprs |= {"logged_at": "logged_at", "shard": "shard", "stream_id": "stream_id"}
    return ", ".join(f"{e} AS {name}" for name, e in exprs.items())


def _decisions_arrow(files: _LogFiles, glob: str, since: float | None, until: float | None) -> Any:
    """The flat decision columns of the files, one row per decision id, in no order.

    The duplicates to drop are found on the key columns alone, and the projection read
    without a window or a sort over the wide rows (DuckDB would hold them all twice)."""
    src = (
        f"read_parquet('{glob}', union_by_name = true, hive_partitioning = false, "
        "filename = true, file_row_number = true)"
    )
    where = _where(since, until)
    files.con.sql(
        "CREATE OR REPLACE TEMP TABLE dropped AS SELECT filename, file_row_number "
        f"FROM {src} {where} QUALIFY row_number() OVER (PARTITION BY decision_id "
        "ORDER BY logged_at, shard, stream_id) > 1"
    )
    select = _flat_select(files.columns(glob))
    if files.con.sql("SELECT count(*) FROM dropped").fetchall()[0][0]:
        src += " ANTI JOIN dropped USING (filename, file_row_number)"
    return files.con.sql(f"SELECT {select} FROM {src} {where}").to_arrow_table()


def _log_order(arrow: Any) -> Any:
    """Row positions of ``arrow``: log order (logged_at, shard, stream_id), then stably by
    ``ts`` as converted (NaT last), as ``ORDER BY`` + ``sort_values("ts", kind="stable")``."""
    import pyarrow.compute as pc

    keys = [("logged_at", "ascending"), ("shard", "ascending"), ("stream_id", "ascending")]
    logged = pc.sort_indices(arrow.select([k for k, _ in keys]), sort_keys=keys).to_numpy()
    ts, _ = epoch_seconds_to_utc(pd.Series(arrow.column("ts").take(logged).to_pandas()))
    return logged[ts.sort_values(kind="stable").index.to_numpy()]


def _flat_decisions(
    files: _LogFiles, glob: str, since: float | None, until: float | None
) -> pd.DataFrame:
    """The documented flat table of the decision files, sorted by ``ts`` (ties in log
    order), from the columns :func:`_decisions_arrow` projects."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from contracts.log_schema import DECISIONS

    arrow = _decisions_arrow(files, glob, since, until)  # only here: freed column by column

    sup = _per_value(
        arrow.column("suppressed_json"),
        lambda v: json.dumps([list(s) for s in msgspec.json.decode(v)]),
    )
    deg = _per_value(arrow.column("degraded_json"), lambda v: ",".join(msgspec.json.decode(v)))
    mv_raw = arrow.column("model_versions_json")

    def versions(v: str) -> dict[str, str]:
        return msgspec.convert(msgspec.json.decode(v), dict[str, str])

    cols: dict[str, Any] = {
        "suppressed": sup,
        "degraded": deg,
        "model_versions": _per_value(mv_raw, lambda v: json.dumps(versions(v), sort_keys=True)),
    }
    for k in MODEL_KINDS:
        cols[f"model_version_{k}"] = _per_value(mv_raw, lambda v, k=k: versions(v).get(k))
    candidates = arrow.column("candidates")
    if "candidates_odd" in arrow.column_names:
        odd = arrow.column("candidates_odd")
        rows = pc.indices_nonzero(pc.is_valid(odd)).to_pylist() if odd.null_count < len(odd) else []
        if rows:  # msgspec writes these, from the records
            part = pa.table(
                {
                    "decision_id": arrow.column("decision_id").take(rows),
                    "ts": arrow.column("ts").take(rows),
                    "candidates": odd.take(rows),
                }
            )
            texts = [msgspec.json.encode(r.candidates).decode() for r in DECISIONS.records(part)]
            mask = pa.array(np.isin(np.arange(len(arrow)), rows))
            candidates = pc.replace_with_mask(
                candidates.combine_chunks(), mask, pa.array(texts, type=pa.string())
            )
    cols["candidates"] = candidates
    for c in DECISION_COLUMNS:
        if c not in cols:
            cols[c] = arrow.column(c)
    order = _log_order(arrow)
    del arrow, mv_raw, candidates  # each column's buffers go once it is converted
    # one column at a time: the Python objects of one column, not of the table, at once
    out: dict[str, pd.Series] = {}
    for c, dtype in DECISION_COLUMNS.items():
        # permuted as Python objects: pointers copied, not a second Arrow column
        frame = pd.DataFrame({c: cols.pop(c).to_pandas().take(order).reset_index(drop=True)})
        out[c] = _typed(frame, {c: dtype}, ("ts", "action_send_at"))[c]
    return pd.DataFrame(out)


def _flat_from_files(
    source: str | Path,
    since: str | datetime | pd.Timestamp | None = None,
    until: str | datetime | pd.Timestamp | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The flat tables of the Parquet log, as ``flatten_decisions(read_log_files(...))``
    and ``flatten_feedback(...)`` give them (sorted by ``ts``), built from the columns."""
    files = _LogFiles(source)
    try:
        lo, hi = _epoch(since), _epoch(until)
        glob = files.glob("decisions")
        decisions = flatten_decisions([]) if glob is None else _flat_decisions(files, glob, lo, hi)
        glob = files.glob("feedback")
        if glob is None:
            feedback = flatten_feedback([])
        else:
            sql = _log_sql(", ".join(FEEDBACK_COLUMNS), glob, "decision_id, event", lo, hi)
            arrow = files.con.sql(sql).to_arrow_table()
            feedback = _typed(arrow.to_pandas(), FEEDBACK_COLUMNS, ("ts",))
    finally:
        files.close()
    feedback = feedback.sort_values("ts", kind="stable").reset_index(drop=True)
    return decisions, feedback  # decisions: already in that order (a sort would copy them)


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
