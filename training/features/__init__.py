"""Features: the Feast feature-view tables, computed from the raw tables, point in time.

``python -m training features`` reads ``raw/`` (what ``ingest`` accepted) and writes one
Parquet file per feature view to ``features/`` (:class:`contracts.tables.DataLayout`), with
exactly the columns :mod:`contracts.features` declares for the data's vocabulary:

| view | rows | features |
|---|---|---|
| ``customer_profile`` | one per customer, at sign-up | time zone offset, opt-out, lifecycle, sign-up day, consent per channel |
| ``customer_behaviour`` | one per customer and snapshot after sign-up | recency, purchases and revenue (13 weeks), open cart and abandons (7 days), views (total, per category over 4 weeks); per-category taste over the whole history: views, cart adds, purchases, days since the last of them, mean price bought and viewed |
| ``customer_engagement`` | same | sends and open rate per channel, click rate, share of activity per local hour |
| ``offer_catalogue`` | one per offer | category index, price, margin |

**Snapshots.** Every ``every_days`` (7) from the UTC midnight of the first accepted event or
send, and one at the end of the history (ingest's ``as_of``). The value at snapshot ``T`` only
uses events and sends strictly before ``T``; a windowed count over ``W`` days counts those in
``[T - W, T)``.

**One implementation, two engines.** Every table is an Ibis expression over the raw tables;
DuckDB (embedded, the default) or Apache Spark (``--engine spark``, for data that outgrows
one machine) executes the same expressions. Each event contributes +1 to the snapshot
bucket it falls in and, for a windowed feature, -1 to the bucket ``W`` days later; a
cumulative sum over each customer's snapshots then gives every feature at every snapshot
in one pass, without a join of events against snapshots.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd

from contracts.features import HOURS, FeatureSpec, View, feature_spec
from contracts.tables import DataLayout
from contracts.vocabulary import load_vocabulary
from training.ingest import LIFECYCLES, history_window, tz_offsets

__all__ = [
    "CART_DAYS",
    "ENGINES",
    "MONEY_DAYS",
    "SNAPSHOTS",
    "VIEWS_DAYS",
    "FeatureRun",
    "compute_features",
    "connect",
    "feature_expressions",
    "snapshot_times",
    "spark_session",
]

ENGINES = ("duckdb", "spark")
#: DuckDB's memory bound for the feature step
DUCKDB_MEMORY = "2GB"
DAY = 86_400
#: window lengths in days: purchases and revenue, category views, cart state
MONEY_DAYS = 91  # 13 weeks (``frequency_90d``, ``monetary_90d``)
VIEWS_DAYS = 28  # 4 weeks (``views_<category>_30d``)
CART_DAYS = 7  # 1 week (``cart_items``, ``cart_abandons_7d``)
#: ``lifecycle`` when the customers table has none: new within this many days of sign-up,
#: lapsing without an event in this many days before the end of the history
LIFECYCLE_DAYS = 30
I64 = "int64"
F64 = "float64"
#: a typed 0.0 (a bare float literal is a DECIMAL on Spark, and a decimal division rounds)
ZERO = ibis.literal(0.0, F64)
#: the key of the behaviour + engagement table in :func:`feature_expressions`
SNAPSHOTS = "snapshots"


def snapshot_times(start: datetime, end: datetime, every_days: int = 7) -> list[datetime]:
    """``start + k * every`` for k = 1, 2, ... before ``end``, then ``end`` itself."""
    step = timedelta(days=every_days)
    out: list[datetime] = []
    t = start + step
    while t < end:
        out.append(t)
        t += step
    out.append(end)
    return out


def spark_session(master: str = "local[*]") -> Any:
    """A local SparkSession set up for the feature step (UTC, quiet, Arrow transfers)."""
    from pyspark.sql import SparkSession

    return (
        SparkSession.builder.master(master)
        .appName("nextbest-features")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.driver.memory", "4g")
        .getOrCreate()
    )


def connect(engine: str = "duckdb", spark: Any = None) -> Any:
    """An Ibis backend: embedded DuckDB, or pyspark (``spark``: a session; default local)."""
    if engine == "duckdb":
        con = ibis.duckdb.connect()
        con.raw_sql("SET enable_progress_bar = false")
        # bounded memory: DuckDB spills to disk beyond it (without a bound the 100k-customer
        # world's grid took 6.4 GB; with 1 GB, 1.7 GB peak for the process)
        con.raw_sql(f"SET memory_limit = '{DUCKDB_MEMORY}'")
        spill = Path(tempfile.gettempdir()) / "nextbest-duckdb"
        con.raw_sql(f"SET temp_directory = '{spill}'")
        return con
    if engine == "spark":
        session = spark if spark is not None else spark_session()
        session.sparkContext.setLogLevel("ERROR")
        return ibis.pyspark.connect(session)
    raise ValueError(f"unknown engine {engine!r}: one of {', '.join(ENGINES)}")


@dataclass
class FeatureRun:
    """What ``features`` wrote: rows per view, the snapshots, the engine and the time."""

    rows: dict[str, int]
    snapshots: list[datetime]
    engine: str
    seconds: float


# ------------------------------------------------------------------------ the expressions


def _i(expr: ir.Value) -> ir.IntegerValue:
    out: ir.IntegerValue = ibis.coalesce(expr.cast(I64), 0)
    return out


def feature_expressions(
    con: Any,
    data_dir: Path,
    every_days: int = 7,
) -> tuple[dict[str, ir.Table], list[datetime], FeatureSpec]:
    """The feature-view tables of ``data_dir``'s raw tables as Ibis expressions on ``con``.

    Keys: the profile and catalogue views, and :data:`SNAPSHOTS` (the behaviour and the
    engagement views' features in one table: they share the snapshot grid). Columns:
    ``customer_id`` (or ``offer_id``), ``ts_s`` (the row's time, epoch seconds), the
    features in :mod:`contracts.features` order.
    """
    data = DataLayout(data_dir)
    spec = feature_spec(load_vocabulary(data.vocabulary))
    start, end = history_window(data_dir)
    snaps = snapshot_times(start, end, every_days)
    start_s, end_s, step = int(start.timestamp()), int(end.timestamp()), every_days * DAY

    def read(name: str) -> ir.Table:
        return con.read_parquet(str(data.raw_table(name)), table_name=f"raw_{name}")

    customers, events, messages, offers = (
        read(t) for t in ("customers", "events", "messages", "offers")
    )
    zones = pd.read_parquet(data.raw_table("customers"), columns=["timezone"])["timezone"]
    zone_names = pd.Series(zones.dropna().unique(), dtype=object)
    offs = tz_offsets(zone_names, end)
    tz = ibis.memtable(
        pd.DataFrame(
            {
                "tz_name": zone_names.astype(str),
                "tz_offset_s": offs.to_numpy(dtype=np.int64),
                # whole hours, half hours up (the profile's ``tz_offset``)
                "tz_hours": np.floor(offs.to_numpy() / 3600 + 0.5).astype(np.int64),
            }
        )
    )
    cust = customers.left_join(tz, customers.timezone == tz.tz_name).select(
        cid=customers.customer_id,
        signup_s=customers.signup_at.epoch_seconds().cast(I64),
        tz_offset_s=ibis.coalesce(tz.tz_offset_s, 0),
        tz_hours=ibis.coalesce(tz.tz_hours, 0),
        opted_out=customers.opted_out,
        lifecycle=customers.lifecycle,
        **{f"consent_{c}": customers[f"consent_{c}"] for c in spec.channels},
    )

    def bucket(s: ir.IntegerValue) -> ir.IntegerValue:
        """The index of the first snapshot strictly after ``s`` (epoch seconds)."""
        out: ir.IntegerValue = ibis.greatest(((s - start_s) // step).cast(I64), 0)
        return out

    ev = events.filter(events.customer_id.notnull()).select(
        cid=events.customer_id,
        typ=events.type,
        oid=events.offer_id,
        category=events.category,
        value=ibis.coalesce(events.value.cast(F64), ZERO),
        s=events.timestamp.epoch_seconds().cast(I64),
    )
    ev = ev.filter(ev.s < end_s)
    ev = ev.join(cust.select("cid", "tz_offset_s"), "cid")
    Cols = dict[str, Callable[[ir.Table], ir.Value]]

    def in_category(c: str) -> Callable[[ir.Table], ir.Value]:
        return lambda t: _i((t.typ == "view") & (t.category == c))

    def at_hour(h: int) -> Callable[[ir.Table], ir.Value]:
        return lambda t: _i(((t.s + t.tz_offset_s) // 3600) % HOURS == h)

    def of(typ: str, c: str) -> Callable[[ir.Table], ir.Value]:
        return lambda t: _i((t.typ == typ) & (t.category == c))

    # groups of features: (window in days or None for all history, the events concerned,
    # column -> value per event); each group is aggregated on its own (narrow tables)
    groups: list[tuple[int | None, tuple[str, ...] | None, Cols]] = [
        (None, None, {
            "views_total": lambda t: _i(t.typ == "view"),
            **{f"act_h{h:02d}": at_hour(h) for h in range(HOURS)},
        }),
        (CART_DAYS, ("cart_add", "purchase", "cart_abandon"), {
            "cart_adds": lambda t: _i(t.typ == "cart_add"),
            "cart_closes": lambda t: _i(t.typ.isin(["purchase", "cart_abandon"])),
            "cart_abandons_7d": lambda t: _i(t.typ == "cart_abandon"),
        }),
        (VIEWS_DAYS, ("view",), {f"views_{c}_30d": in_category(c) for c in spec.categories}),
        (MONEY_DAYS, ("purchase",), {
            "frequency_90d": lambda t: ibis.literal(1, I64),
            "monetary_90d": lambda t: t.value,
        }),
        # per-category taste, whole history (issue 16.5): views, cart adds, purchases and
        # the purchases' total value (mean price bought)
        (None, ("view", "cart_add", "purchase"), {
            **{f"views_{c}": of("view", c) for c in spec.categories},
            **{f"carts_{c}": of("cart_add", c) for c in spec.categories},
            **{f"buys_{c}": of("purchase", c) for c in spec.categories},
            "buys_n": lambda t: _i(t.typ == "purchase"),
            "buys_value": lambda t: ibis.ifelse(t.typ == "purchase", t.value, ZERO),
        }),
    ]  # fmt: skip
    #: sums of money (float); every other sum counts events
    money = {"monetary_90d", "buys_value", "views_value"}
    columns: list[str] = []
    aggregates: list[ir.Table] = []
    for days, types, cols in groups:
        sub = ev if types is None else ev.filter(ev.typ.isin(list(types)))
        columns.extend(cols)
        # +value in the bucket of the event; -value in the bucket W days later (window ends)
        pieces = [sub.select(cid=sub.cid, b=bucket(sub.s), **{k: f(sub) for k, f in cols.items()})]
        if days is not None:
            gone = sub.filter(sub.s + days * DAY < end_s)
            pieces.append(
                gone.select(
                    cid=gone.cid,
                    b=bucket(gone.s + days * DAY),
                    **{k: -f(gone) for k, f in cols.items()},
                )
            )
        signed = ibis.union(*pieces, distinct=False) if len(pieces) > 1 else pieces[0]
        aggregates.append(
            signed.group_by(["cid", "b"]).aggregate(**{k: signed[k].sum() for k in cols})
        )
    buys = ev.filter(ev.typ == "purchase")
    last_buy = buys.group_by(cid=buys.cid, b=bucket(buys.s)).aggregate(last_buy_s=buys.s.max())
    # the price of every offer viewed (mean price viewed) and the last time of each
    # category (days since the customer last viewed, carted or bought it)
    price = offers.select(poid=offers.offer_id, price=offers.price.cast(F64))
    seen = ev.filter(ev.typ.isin(["view", "cart_add", "purchase"]))
    viewed = seen.filter(seen.typ == "view")
    viewed = viewed.left_join(price, viewed.oid == price.poid)
    v1 = viewed.select(
        cid=viewed.cid,
        b=bucket(viewed.s),
        views_n=_i(viewed.price.notnull()),
        views_value=ibis.coalesce(viewed.price, ZERO),
    )
    aggregates.append(
        v1.group_by(["cid", "b"]).aggregate(
            views_n=v1.views_n.sum(), views_value=v1.views_value.sum()
        )
    )
    columns.extend(["views_n", "views_value"])
    last_cat = seen.group_by(cid=seen.cid, b=bucket(seen.s)).aggregate(
        **{f"last_{c}_s": ibis.ifelse(seen.category == c, seen.s, None).max()
           for c in spec.categories}
    )  # fmt: skip

    ms = messages.select(
        cid=messages.customer_id,
        channel=messages.channel,
        delivered=messages.delivered,
        opened=messages.opened,
        clicked=messages.clicked,
        s=messages.sent_at.epoch_seconds().cast(I64),
    )
    ms = ms.filter(ms.s < end_s)
    msg_cols: dict[str, ir.Value] = {}
    for c in spec.channels:
        on = ms.channel == c
        msg_cols[f"sent_{c}"] = _i(on)
        msg_cols[f"delivered_{c}"] = _i(on & ms.delivered)
        msg_cols[f"opened_{c}"] = _i(on & ms.opened)
    msg_cols["clicks"] = _i(ms.clicked.fill_null(False))
    m1 = ms.select(cid=ms.cid, b=bucket(ms.s), **msg_cols)
    msg_agg = m1.group_by(["cid", "b"]).aggregate(**{c: m1[c].sum() for c in msg_cols})

    # the grid: every customer at every snapshot, cumulative sums over the buckets
    snap = ibis.memtable(
        pd.DataFrame(
            {"k": np.arange(len(snaps), dtype=np.int64),
             "ts_s": np.array([int(t.timestamp()) for t in snaps], dtype=np.int64)}
        )
    )  # fmt: skip
    grid = cust.select("cid", "signup_s").cross_join(snap)
    g = grid
    for agg in aggregates:
        names = [c for c in agg.columns if c not in ("cid", "b")]
        g = g.left_join(agg, [g.cid == agg.cid, g.k == agg.b]).select(g, *(agg[c] for c in names))
    g = g.left_join(last_buy, [g.cid == last_buy.cid, g.k == last_buy.b]).select(
        g, last_buy.last_buy_s
    )
    g = g.left_join(last_cat, [g.cid == last_cat.cid, g.k == last_cat.b]).select(
        g, *(last_cat[f"last_{c}_s"] for c in spec.categories)
    )
    g = g.left_join(msg_agg, [g.cid == msg_agg.cid, g.k == msg_agg.b]).select(
        g, *(msg_agg[c] for c in msg_cols)
    )
    w = ibis.cumulative_window(group_by=g.cid, order_by=g.k)
    acc: dict[str, ir.Value] = {}
    for c in [*columns, *msg_cols]:
        fill = ZERO if c in money else ibis.literal(0, I64)
        acc[c] = ibis.coalesce(g[c], fill).sum().over(w)
    acc["last_buy_s"] = g.last_buy_s.max().over(w)
    for c in spec.categories:
        acc[f"last_{c}_s"] = g[f"last_{c}_s"].max().over(w)
    g = g.mutate(**acc)
    g = g.filter(g.ts_s > g.signup_s)

    opens_total = sum((g[f"opened_{c}"] for c in spec.channels), ibis.literal(0, I64))
    act_total = sum((g[f"act_h{h:02d}"] for h in range(HOURS)), ibis.literal(0, I64))
    # behaviour and engagement come from the same grid: one table, split when written
    snapshots = g.select(
        customer_id=g.cid,
        ts_s=g.ts_s,
        recency_days=(g.ts_s - g.last_buy_s).cast(F64) / ibis.literal(float(DAY), F64),
        frequency_90d=g.frequency_90d,
        monetary_90d=g.monetary_90d,
        cart_items=ibis.greatest(g.cart_adds - g.cart_closes, 0),
        cart_abandons_7d=g.cart_abandons_7d,
        views_total=g.views_total,
        **{f"views_{c}_30d": g[f"views_{c}_30d"] for c in spec.categories},
        **{f"views_{c}": g[f"views_{c}"] for c in spec.categories},
        **{f"carts_{c}": g[f"carts_{c}"] for c in spec.categories},
        **{f"buys_{c}": g[f"buys_{c}"] for c in spec.categories},
        **{f"days_{c}": (g.ts_s - g[f"last_{c}_s"]).cast(F64) / ibis.literal(float(DAY), F64)
           for c in spec.categories},
        avg_buy_price=g.buys_value / g.buys_n.cast(F64).nullif(0),
        avg_view_price=g.views_value / g.views_n.cast(F64).nullif(0),
        **{f"sent_{c}": g[f"sent_{c}"] for c in spec.channels},
        **{f"open_rate_{c}": g[f"opened_{c}"].cast(F64) / g[f"delivered_{c}"].nullif(0)
           for c in spec.channels},
        click_rate=g.clicks.cast(F64) / opens_total.nullif(0),
        **{f"act_share_h{h:02d}": g[f"act_h{h:02d}"].cast(F64) / ibis.greatest(act_total, 1)
           for h in range(HOURS)},
    )  # fmt: skip

    last_event = ev.group_by("cid").aggregate(last_s=ev.s.max())
    pc = cust.left_join(last_event, "cid").select(cust, last_event.last_s)
    derived = ibis.cases(
        (end_s - pc.signup_s < LIFECYCLE_DAYS * DAY, 0),
        (pc.last_s.isnull() | (pc.last_s < end_s - LIFECYCLE_DAYS * DAY), 2),
        else_=1,
    )
    stage = ibis.cases(*((pc.lifecycle == n, i) for i, n in enumerate(LIFECYCLES)), else_=-1)
    profile = pc.select(
        customer_id=pc.cid,
        ts_s=pc.signup_s,
        tz_offset=pc.tz_hours,
        opted_out=_i(pc.opted_out),
        lifecycle=ibis.ifelse(stage >= 0, stage, derived),
        signup_day=pc.signup_s // DAY,
        **{f"consent_{c}": _i(pc[f"consent_{c}"] & ~pc.opted_out) for c in spec.channels},
    )

    cat_idx = ibis.cases(
        *((offers.category == c, i) for i, c in enumerate(spec.categories)), else_=-1
    )
    first_valid = offers.valid_from.epoch_seconds().cast(I64).min().over(ibis.window())
    catalogue = offers.select(
        offer_id=offers.offer_id,
        ts_s=ibis.least(first_valid, start_s),
        category_idx=cat_idx,
        price=offers.price,
        margin=offers.margin,
        name=offers.name,
        category=offers.category,
        valid_from=offers.valid_from,
        valid_to=offers.valid_to,
    )
    views_out = {
        spec.profile.name: profile,
        SNAPSHOTS: snapshots,
        spec.offers.name: catalogue,
    }
    return views_out, snaps, spec


def _execute(expr: ir.Table, key: str) -> pd.DataFrame:
    """Run ``expr``; rows sorted by entity and time (through Arrow: one copy, not three)."""
    table = expr.to_pyarrow().sort_by([(key, "ascending"), ("ts_s", "ascending")])
    df: pd.DataFrame = table.to_pandas()
    return df


def _frame(expr: ir.Table | pd.DataFrame, view: View) -> pd.DataFrame:
    """Give an executed view (or execute ``expr``) the view's column order and dtypes
    (``event_timestamp`` in UTC)."""
    df = _execute(expr, view.join_key) if isinstance(expr, ir.Table) else expr
    key = view.join_key
    out = pd.DataFrame({key: df[key].astype(str)})
    out["event_timestamp"] = pd.to_datetime(df["ts_s"].to_numpy(dtype=np.int64), unit="s", utc=True)
    for f in view.features:
        col = pd.to_numeric(df[f.name], errors="coerce")
        if f.dtype == "int64":
            out[f.name] = col.astype(np.int64)
        else:  # the catalogue keeps its prices exact; Feast reads them as float32
            out[f.name] = col.astype(np.float64 if key == "offer_id" else np.float32)
    if key == "offer_id":  # the catalogue's descriptive columns
        for c in df.columns:
            if c not in out and c != "ts_s":
                col = df[c]
                if pd.api.types.is_datetime64_any_dtype(col):  # engines differ: UTC, in us
                    col = pd.to_datetime(col, utc=True).astype("datetime64[us, UTC]")
                out[c] = col
    return out


def compute_features(
    data_dir: Path, engine: str = "duckdb", every_days: int = 7, con: Any = None
) -> FeatureRun:
    """Compute every feature-view table of ``data_dir`` and write ``features/<view>.parquet``."""
    t0 = time.perf_counter()
    con = con if con is not None else connect(engine)
    exprs, snaps, spec = feature_expressions(con, data_dir, every_days)
    data = DataLayout(data_dir)
    data.features.mkdir(parents=True, exist_ok=True)
    rows: dict[str, int] = {}
    for name, expr in exprs.items():
        views = (spec.behaviour, spec.engagement) if name == SNAPSHOTS else (spec.view(name),)
        table = _execute(expr, views[0].join_key)
        for view in views:
            df = _frame(table, view)
            df.to_parquet(data.feature_table(view.name), index=False)
            rows[view.name] = len(df)
    return FeatureRun(rows, snaps, engine, time.perf_counter() - t0)
