"""Ingest: check a company's raw tables against the input contract and keep what passes.

``python -m training ingest --source DIR`` reads ``customers``, ``events``, ``messages`` and
``offers`` (Parquet or CSV, see :mod:`contracts.tables`), checks every row and writes

- ``raw/<table>.parquet``: the rows that pass, with the contract's types (timestamps in UTC);
- ``rejected/<table>.parquet``: every other row, its original values and a ``reason``;
- ``ingest_report.json``: rows read, accepted and rejected per table and check;
- ``vocabulary.json``: channels (configuration), categories (the offers table).

A table-level problem (a missing table or required column, a column none of whose values has
its type) stops ingest with :class:`IngestError` naming the table and column; a bad row is
rejected with its reason and never reaches a later stage. Nothing is dropped silently: every
input row is either in ``raw/`` or in ``rejected/``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from contracts.tables import (
    CUSTOMERS,
    EVENT_TYPES,
    EVENTS,
    MESSAGES,
    OFFERS,
    TABLES,
    Column,
    DataLayout,
    Table,
)
from contracts.vocabulary import DEFAULT_VOCABULARY, Vocabulary, load_vocabulary

__all__ = [
    "LIFECYCLES",
    "IngestError",
    "IngestReport",
    "TableReport",
    "format_report",
    "ingest",
    "tz_offsets",
]

#: CRM stages of the customers table's ``lifecycle`` column, in feature order (0, 1, 2)
LIFECYCLES: tuple[str, ...] = ("new", "active", "lapsing")
_TRUE = {"true", "t", "1", "yes", "y", "1.0"}
_FALSE = {"false", "f", "0", "no", "n", "0.0"}
Mask = pd.Series


class IngestError(ValueError):
    """A problem with a whole table (missing file or column, a column of the wrong type)."""


@dataclass
class TableReport:
    name: str
    file: str
    rows: int = 0
    accepted: int = 0
    rejected: int = 0
    #: check -> rows that failed it (a row may fail several)
    checks: dict[str, int] = field(default_factory=dict)
    #: columns outside the contract: kept as attributes (customers) or ignored
    extra_columns: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class IngestReport:
    source: str
    data_dir: str
    as_of: str
    ingested_at: str
    tables: dict[str, TableReport]
    vocabulary: dict[str, list[str]]
    #: first and last timestamp of the accepted events and messages (the features' history)
    history: dict[str, str | None]

    def to_json(self) -> str:
        data = {
            "source": self.source,
            "data_dir": self.data_dir,
            "as_of": self.as_of,
            "ingested_at": self.ingested_at,
            "history": self.history,
            "vocabulary": self.vocabulary,
            "tables": {k: vars(v) for k, v in self.tables.items()},
        }
        return json.dumps(data, indent=2)


# ------------------------------------------------------------------------------ reading


def _find(source: Path, table: str) -> Path:
    for ext in (".parquet", ".csv", ".csv.gz"):
        p = source / f"{table}{ext}"
        if p.exists():
            return p
    raise IngestError(
        f"table {table!r}: no {table}.parquet or {table}.csv in {source} (the four tables "
        f"of the input contract are {', '.join(t.name for t in TABLES)})"
    )


def _read(path: Path) -> pd.DataFrame:
    if path.name.endswith(".parquet"):
        return pd.read_parquet(path)
    # CSV: everything as text, an empty field is a missing value; types are checked below
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])


# ------------------------------------------------------------------------------ typing


def _as_string(s: pd.Series) -> tuple[pd.Series, Mask]:
    if pd.api.types.infer_dtype(s, skipna=True) in ("string", "empty"):  # the fast path
        return s.astype(object), pd.Series(False, index=s.index)
    out = s.astype(object).where(s.notna(), None)
    out = out.map(lambda v: v if v is None or isinstance(v, str) else _str_scalar(v))
    return out.astype(object), pd.Series(False, index=s.index)


def _str_scalar(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _as_timestamp(s: pd.Series) -> tuple[pd.Series, Mask]:
    if pd.api.types.is_datetime64_any_dtype(s):
        ts = s if getattr(s.dt, "tz", None) is not None else s.dt.tz_localize("UTC")
        ts = ts.dt.tz_convert("UTC")
        bad = pd.Series(False, index=s.index)
    else:
        text = s.astype(object).where(s.notna(), None)
        ts = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
        bad = ts.isna() & s.notna()
    return ts.astype("datetime64[us, UTC]"), bad


def _as_float(s: pd.Series) -> tuple[pd.Series, Mask]:
    if pd.api.types.is_bool_dtype(s):
        s = s.astype("float64")
    v = pd.to_numeric(s, errors="coerce").astype("float64")
    bad = (v.isna() & s.notna()) | ~np.isfinite(v.fillna(0.0))
    return v.where(~bad), bad


def _as_int(s: pd.Series) -> tuple[pd.Series, Mask]:
    v, bad = _as_float(s)
    bad = bad | (v.notna() & (v != v.round()))
    return v.where(~bad).astype("Int64"), bad


def _as_bool(s: pd.Series) -> tuple[pd.Series, Mask]:
    if pd.api.types.is_bool_dtype(s):
        return s.astype("boolean"), pd.Series(False, index=s.index)
    if pd.api.types.is_numeric_dtype(s):
        v = pd.Series(pd.NA, index=s.index, dtype="boolean")
        v[s == 1] = True
        v[s == 0] = False
        return v, v.isna() & s.notna()
    text = (
        s.astype(object)
        .where(s.notna(), None)
        .map(lambda x: None if x is None else str(x).strip().lower())
    )
    v = pd.Series(pd.NA, index=s.index, dtype="boolean")
    v[text.isin(_TRUE)] = True
    v[text.isin(_FALSE)] = False
    return v, v.isna() & s.notna()


_COERCE: dict[str, Callable[[pd.Series], tuple[pd.Series, Mask]]] = {
    "string": _as_string,
    "timestamp": _as_timestamp,
    "float": _as_float,
    "int": _as_int,
    "bool": _as_bool,
}
_NULL: dict[str, Any] = {
    "string": lambda n: pd.Series([None] * n, dtype=object),
    "timestamp": lambda n: pd.Series(pd.NaT, index=range(n), dtype="datetime64[us, UTC]"),
    "float": lambda n: pd.Series(np.nan, index=range(n), dtype="float64"),
    "int": lambda n: pd.Series(pd.NA, index=range(n), dtype="Int64"),
    "bool": lambda n: pd.Series(pd.NA, index=range(n), dtype="boolean"),
}


class _Checker:
    """One table's rows, typed, with the failing checks collected per row."""

    def __init__(self, table: Table, df: pd.DataFrame, columns: tuple[Column, ...], path: Path):
        self.table = table
        self.columns = columns
        self.original = df.reset_index(drop=True)
        self.n = len(self.original)
        self.report = TableReport(table.name, str(path), rows=self.n)
        self.failed: dict[str, np.ndarray] = {}
        self.typed = pd.DataFrame(index=range(self.n))
        known = {c.name for c in columns}
        self.report.extra_columns = [c for c in self.original.columns if c not in known]
        missing = [c.name for c in columns if c.required and c.name not in self.original]
        if missing:
            raise IngestError(
                f"table {table.name!r} ({path.name}): missing required column"
                f"{'s' if len(missing) > 1 else ''} {', '.join(repr(m) for m in missing)}"
            )
        for col in columns:
            if col.name not in self.original:
                self.typed[col.name] = _NULL[col.type](self.n)
                continue
            raw = self.original[col.name]
            typed, bad = _COERCE[col.type](raw)
            typed = typed.reset_index(drop=True)
            bad = bad.reset_index(drop=True)
            n_bad, n_given = int(bad.sum()), int(raw.notna().sum())
            if n_given and n_bad == n_given and n_given > 0:
                example = raw[bad.to_numpy()].iloc[0]
                raise IngestError(
                    f"table {table.name!r} ({path.name}): column {col.name!r} should be "
                    f"{col.type} but none of its values is (e.g. {example!r})"
                )
            self.fail(f"bad_type:{col.name}", bad.to_numpy())
            if not col.nullable:
                self.fail(
                    f"missing_value:{col.name}", (raw.isna().reset_index(drop=True)).to_numpy()
                )
            self.typed[col.name] = typed

    def fail(self, check: str, mask: Any) -> None:
        m = np.asarray(mask, dtype=bool)
        if m.any():
            prev = self.failed.get(check)
            self.failed[check] = m if prev is None else (prev | m)

    def col(self, name: str) -> pd.Series:
        return self.typed[name]

    @property
    def ok(self) -> np.ndarray:
        bad = np.zeros(self.n, dtype=bool)
        for m in self.failed.values():
            bad |= m
        return ~bad

    def duplicates(self, key: str) -> None:
        """Repeated ids: the first row with an id is kept, later ones are rejected."""
        k = self.col(key)
        self.fail("duplicate_id", (k.notna() & k.duplicated(keep="first")).to_numpy())

    def future(self, as_of: pd.Timestamp, *cols: str) -> None:
        for c in cols:
            self.fail(f"future_timestamp:{c}", (self.col(c) > as_of).fillna(False).to_numpy())

    def finish(self, data: DataLayout, keep_extra: bool) -> pd.DataFrame:
        ok = self.ok
        rep = self.report
        rep.accepted = int(ok.sum())
        rep.rejected = self.n - rep.accepted
        rep.checks = {k: int(v.sum()) for k, v in sorted(self.failed.items())}
        out = self.typed[ok].reset_index(drop=True)
        if keep_extra:
            for c in rep.extra_columns:
                out[c] = self.original.loc[ok, c].reset_index(drop=True)
        elif rep.extra_columns:
            rep.notes.append(f"ignored columns (not in the contract): {rep.extra_columns}")
        _write(out, self.columns, data.raw_table(self.table.name))
        bad = ~ok
        rejected = self.original[bad].astype(object).where(self.original[bad].notna(), None)
        rejected = rejected.map(lambda v: v if v is None else str(v))
        reasons = np.full(self.n, "", dtype=object)
        for check, m in sorted(self.failed.items()):
            idx = np.nonzero(m)[0]
            reasons[idx] = [r + ("; " if r else "") + check for r in reasons[idx]]
        rejected = rejected.reset_index(drop=True)
        rejected["reason"] = reasons[bad]
        rejected.to_parquet(data.rejected / f"{self.table.name}.parquet", index=False)
        return out


_ARROW = {
    "string": pa.string(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "float": pa.float64(),
    "int": pa.int64(),
    "bool": pa.bool_(),
}


def _write(df: pd.DataFrame, columns: tuple[Column, ...], path: Path) -> None:
    """Parquet with the contract's column types (also for a column that is all empty)."""
    types = {c.name: _ARROW[c.type] for c in columns}
    arrays = []
    for name in df.columns:
        arr = pa.Array.from_pandas(df[name])
        want = types.get(name)
        if want is not None and arr.type != want:
            arr = pa.nulls(len(arr), want) if arr.null_count == len(arr) else arr.cast(want)
        arrays.append(arr)
    pq.write_table(pa.Table.from_arrays(arrays, names=[str(c) for c in df.columns]), path)


# ------------------------------------------------------------------------------ checks


def _valid_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, IsADirectoryError):
        return False
    return True


def tz_offsets(zones: pd.Series, at: datetime) -> pd.Series:
    """UTC offset in seconds of each IANA zone name at ``at`` (UTC when missing)."""
    cache: dict[str, int] = {}
    for z in zones.dropna().unique():
        off = at.astimezone(ZoneInfo(str(z))).utcoffset()
        cache[str(z)] = int(off.total_seconds()) if off is not None else 0
    return zones.map(lambda z: cache.get(z, 0) if isinstance(z, str) else 0).astype("int64")


def _local_hours(sent_at: pd.Series, zones: pd.Series) -> pd.Series:
    """The local hour of each send in its customer's zone (DST-aware; UTC when unknown)."""
    out = pd.Series(0, index=sent_at.index, dtype="int64")
    zones = zones.fillna("UTC")
    for z, idx in zones.groupby(zones).groups.items():
        out[idx] = sent_at[idx].dt.tz_convert(str(z)).dt.hour.astype("int64")
    return out


def _vocabulary(source: Path, given: Path | None) -> tuple[Vocabulary, bool, str]:
    """The configured vocabulary, whether it lists categories, and where it came from."""
    for path in (given, source / "vocabulary.json"):
        if path is not None and path.exists():
            try:
                raw = json.loads(path.read_text())
                vocab = load_vocabulary(path)
            except (ValueError, json.JSONDecodeError) as exc:
                raise IngestError(f"vocabulary {path}: {exc}") from exc
            return vocab, "categories" in raw, str(path)
    return DEFAULT_VOCABULARY, False, "default channels (no vocabulary.json in the source)"


def ingest(
    source: Path,
    data_dir: Path,
    as_of: datetime | None = None,
    vocabulary: Path | None = None,
) -> IngestReport:
    """Check the four tables in ``source``; write raw/, rejected/, the report, the vocabulary.

    ``as_of``: the end of the observed history (default: now); later timestamps are rejected
    as being in the future.
    """
    as_of = (as_of or datetime.now(UTC)).astimezone(UTC)
    now = pd.Timestamp(as_of)
    data = DataLayout(data_dir)
    for d in (data.raw, data.rejected):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
    vocab, fixed_categories, vocab_from = _vocabulary(source, vocabulary)
    paths = {t.name: _find(source, t.name) for t in TABLES}
    frames = {name: _read(p) for name, p in paths.items()}

    # customers ------------------------------------------------------------------
    consent_cols = []
    notes: list[str] = []
    for ch in vocab.channels:
        name = f"consent_{ch}"
        required = ch in vocab.outbound
        if name not in frames["customers"] and not required:
            notes.append(f"{name} absent: in-session channel {ch!r} taken as consented")
        consent_cols.append(
            Column(name, "bool", required=required, nullable=True,
                   description=f"may be contacted by {ch} (missing value: no)")
        )  # fmt: skip
    cols = (*CUSTOMERS.columns, *consent_cols)
    c = _Checker(CUSTOMERS, frames["customers"], cols, paths["customers"])
    c.report.notes.extend(notes)
    c.report.extra_columns = [x for x in c.report.extra_columns if x not in {k.name for k in cols}]
    for ch in vocab.channels:
        name = f"consent_{ch}"
        default = name not in frames["customers"] and ch not in vocab.outbound
        c.typed[name] = c.col(name).fillna(default).astype(bool)
    c.typed["opted_out"] = c.col("opted_out").fillna(False).astype(bool)
    c.duplicates("customer_id")
    c.future(now, "signup_at")
    tz = c.col("timezone")
    zones = {z: _valid_zone(z) for z in tz.dropna().unique()}
    c.fail("invalid_timezone", tz.map(lambda z: isinstance(z, str) and not zones[z]).to_numpy())
    life = c.col("lifecycle")
    c.fail("invalid_value:lifecycle", (life.notna() & ~life.isin(LIFECYCLES)).to_numpy())
    customers = c.finish(data, keep_extra=True)

    # offers ---------------------------------------------------------------------
    o = _Checker(OFFERS, frames["offers"], OFFERS.columns, paths["offers"])
    o.duplicates("offer_id")
    o.fail("invalid_value:price", (o.col("price") <= 0).fillna(False).to_numpy())
    margin = o.col("margin")
    o.fail("invalid_value:margin", ((margin < 0) | (margin > 1)).fillna(False).to_numpy())
    o.fail("invalid_value:valid_to", (o.col("valid_to") < o.col("valid_from")).fillna(False))
    cat = o.col("category")
    from contracts.vocabulary import _NAME  # the vocabulary's rule for names

    o.fail(
        "invalid_value:category",
        cat.map(lambda x: isinstance(x, str) and not _NAME.match(x)).to_numpy(dtype=bool),
    )
    if fixed_categories:
        o.fail("unknown_category", (cat.notna() & ~cat.isin(vocab.categories)).to_numpy())
    offers = o.finish(data, keep_extra=False)
    if fixed_categories:
        categories = vocab.categories
    else:
        categories = tuple(dict.fromkeys(offers["category"].tolist()))
    if not categories:
        raise IngestError("table 'offers': no offer passed the checks (see rejected/offers)")
    vocab = Vocabulary(channels=vocab.channels, categories=categories, outbound=vocab.outbound)
    offer_cat = dict(zip(offers["offer_id"], offers["category"], strict=True))
    signup = dict(zip(customers["customer_id"], customers["signup_at"], strict=True))

    # events ---------------------------------------------------------------------
    e = _Checker(EVENTS, frames["events"], EVENTS.columns, paths["events"])
    e.duplicates("event_id")
    cid, anon = e.col("customer_id"), e.col("anonymous_id")
    e.fail("missing_value:customer_id", (cid.isna() & anon.isna()).to_numpy())
    e.fail("unknown_event_type", (e.col("type").notna() & ~e.col("type").isin(EVENT_TYPES)))
    e.future(now, "timestamp")
    known = cid.isin(signup.keys())
    e.fail("unknown_customer", (cid.notna() & ~known).to_numpy())
    su = pd.to_datetime(cid.map(signup), utc=True)
    e.fail("before_signup", (known & (e.col("timestamp") < su)).fillna(False).to_numpy())
    off = e.col("offer_id")
    e.fail("unknown_offer", (off.notna() & ~off.isin(offer_cat.keys())).to_numpy())
    # the category of an offer is the catalogue's
    from_offer = off.map(offer_cat)
    e.typed["category"] = from_offer.where(from_offer.notna(), e.col("category"))
    ecat = e.col("category")
    e.fail("unknown_category", (ecat.notna() & ~ecat.isin(categories)).to_numpy())
    e.fail("invalid_value:value", (e.col("value") < 0).fillna(False).to_numpy())
    events = e.finish(data, keep_extra=False)

    # messages -------------------------------------------------------------------
    m = _Checker(MESSAGES, frames["messages"], MESSAGES.columns, paths["messages"])
    m.duplicates("message_id")
    mc = m.col("customer_id")
    m.fail("unknown_customer", (mc.notna() & ~mc.isin(signup.keys())).to_numpy())
    mo = m.col("offer_id")
    m.fail("unknown_offer", (mo.notna() & ~mo.isin(offer_cat.keys())).to_numpy())
    chan = m.col("channel")
    m.fail("unknown_channel", (chan.notna() & ~chan.isin(vocab.channels)).to_numpy())
    m.future(now, "sent_at", "delivered_at", "opened_at", "clicked_at", "converted_at")
    deliv, opened, clicked = m.col("delivered"), m.col("opened"), m.col("clicked")
    m.fail(
        "inconsistent_outcome",
        ((opened & ~deliv) | (clicked.fillna(False) & ~opened)).fillna(False).to_numpy(),
    )
    m.fail("invalid_value:revenue", (m.col("revenue") < 0).fillna(False).to_numpy())
    prop = m.col("propensity")
    m.fail("invalid_value:propensity", ((prop <= 0) | (prop > 1)).fillna(False).to_numpy())
    lh = m.col("local_hour")
    m.fail("invalid_value:local_hour", ((lh < 0) | (lh > 23)).fillna(False).to_numpy())
    zone = mc.map(dict(zip(customers["customer_id"], customers["timezone"], strict=True)))
    missing_lh = lh.isna() & m.col("sent_at").notna() & mc.isin(signup.keys())
    if missing_lh.any():
        filled = _local_hours(m.col("sent_at")[missing_lh], zone[missing_lh])
        lh = lh.copy()
        lh[missing_lh] = filled
        m.typed["local_hour"] = lh
        m.report.notes.append(
            f"local_hour computed from sent_at and the customer's time zone for "
            f"{int(missing_lh.sum()):,} sends"
        )
    messages = m.finish(data, keep_extra=False)

    # report -----------------------------------------------------------------------
    stamps = [s for s in (events["timestamp"], messages["sent_at"]) if len(s)]
    first = min((s.min() for s in stamps), default=None)
    last = max((s.max() for s in stamps), default=None)
    data.vocabulary.write_bytes(vocab.to_json())
    report = IngestReport(
        source=str(source),
        data_dir=str(data_dir),
        as_of=as_of.isoformat(),
        ingested_at=datetime.now(UTC).isoformat(timespec="seconds"),
        tables={t: r.report for t, r in (("customers", c), ("offers", o), ("events", e),
                                          ("messages", m))},
        vocabulary={
            "channels": list(vocab.channels),
            "outbound": list(vocab.outbound),
            "categories": list(vocab.categories),
            "channels_from": [vocab_from],
            "categories_from": [vocab_from if fixed_categories else "the offers table"],
        },
        history={
            "first": None if first is None else pd.Timestamp(first).isoformat(),
            "last": None if last is None else pd.Timestamp(last).isoformat(),
        },
    )  # fmt: skip
    data.ingest_report.write_text(report.to_json())
    return report


def load_report(data_dir: Path) -> dict[str, Any]:
    path = DataLayout(data_dir).ingest_report
    if not path.exists():
        raise IngestError(f"{path} not found: run `python -m training ingest --source DIR` first")
    out: dict[str, Any] = json.loads(path.read_text())
    return out


def history_window(data_dir: Path) -> tuple[datetime, datetime]:
    """(start, end) of the features' history: the first accepted timestamp's UTC midnight
    and ingest's ``as_of``."""
    rep = load_report(data_dir)
    end = datetime.fromisoformat(rep["as_of"]).astimezone(UTC)
    first = rep["history"]["first"]
    if first is None:
        raise IngestError("no accepted events or messages: nothing to compute features from")
    f = datetime.fromisoformat(first).astimezone(UTC)
    start = datetime(f.year, f.month, f.day, tzinfo=UTC)
    return start, end


def format_report(report: IngestReport) -> str:
    """The report as a readable text block (what ``ingest`` prints)."""
    lines = [f"Ingest {report.source} -> {report.data_dir} (as of {report.as_of})", ""]
    lines.append(f"  {'table':<10} {'rows':>12} {'accepted':>12} {'rejected':>10}")
    for t in report.tables.values():
        lines.append(f"  {t.name:<10} {t.rows:>12,} {t.accepted:>12,} {t.rejected:>10,}")
    for t in report.tables.values():
        if t.checks:
            lines.append(f"\n  {t.name}: rejected rows per check (rejected/{t.name}.parquet)")
            for k, v in t.checks.items():
                lines.append(f"    {k:<34} {v:>10,}")
        for n in t.notes:
            lines.append(f"  {t.name}: {n}")
        if t.extra_columns and t.name == "customers":
            lines.append(f"  customers: attributes kept: {', '.join(t.extra_columns)}")
    voc = report.vocabulary
    lines.append("")
    lines.append(
        f"  channels    {', '.join(voc['channels'])} (outbound: {', '.join(voc['outbound'])})"
    )
    lines.append(f"  categories  {', '.join(voc['categories'])} (from {voc['categories_from'][0]})")
    lines.append(f"  history     {report.history['first']} .. {report.history['last']}")
    return "\n".join(lines)
