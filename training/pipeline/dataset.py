"""Training sets from Feast: point-in-time joins through the feature services, split by time.

Entity rows are the logged marketing messages (``messages.parquet``): ``customer_id``,
``offer_id`` and ``event_timestamp = sent_at``. Each model's rows go through its own feature
service with ``get_historical_features``, so every feature value is the latest snapshot at or
before the send time (never after: see ``tests/training/test_point_in_time.py``).

| model | rows | label | feature service |
|---|---|---|---|
| propensity | opened messages | converted | propensity_v1 |
| send_time | delivered messages sent at a random hour (policy "random") | opened | send_time_v1 |
| channel | delivered messages sent by the random policy | opened | channel_v1 |

The split is by time: messages sent before the 80% quantile of send time train, the rest
test. Nothing is shuffled across the boundary. When the send times do not spread (a data set
whose sends all share one date, such as Hillstrom's single campaign), a time split leaves one
side (almost) empty; then a seeded 20% of the *customers* are held out instead and the run
records ``split = customer`` (``split = time`` otherwise).

Only observable columns are needed: the contract's ``messages`` table (``raw/messages.parquet``
after ``ingest``; ``messages.parquet`` in older world folders). ``local_hour`` is computed from
``sent_at`` and the customer's IANA time zone when the table does not carry it; ``policy`` may
be missing (then the send-time and channel models learn from every delivered send, which is
confounded by whatever rule chose the hour and channel: the docs say so); ``propensity`` is
kept for the off-policy value of the candidate (:mod:`training.pipeline.evaluate`). The
channels and categories are the data's vocabulary (``vocabulary.json``), not constants.

**Retraining from the service's own log** (``extra``: rows from
:func:`training.measurement.log_training.messages_from_log`, the exported decision log with outcomes):
the log rows join the history with their ``weight`` (inverse logging propensity; history
rows weigh 1) and go through the same point-in-time joins. They feed the propensity model
(conversion given an open does not depend on when or how the message was sent); the
send-time and channel models learn from random-policy sends only, and the service sends at
the hour it judged best, so its log is not used for them. The log rows are the newest rows,
so the propensity model then splits at the 80% quantile of the *log rows'* send times: it
learns from the whole history and the older 80% of the service's decisions and is tested on
its newest 20%. The other two models keep the history split. Every row carries its
``source`` (:data:`SOURCE`: ``history`` or ``log``) into its model's ``meta``, and only that
column tells the log rows apart (``ModelData.from_log``): a log row's ``message_id`` is
``"L" + decision_id``, but a company's own send ids may begin with "L" too.

Entity rows with no feature snapshot of one of the service's views at their send time (the
first week of history, before the first weekly snapshot, and customers before their first
snapshot) are dropped, as Feast's file offline store did (its DuckDB store, used now, keeps
them with empty features); the row counts printed by ``train`` show how many remain.

``max_rows`` (``--max-rows``) optionally caps the entity rows of each model with a seeded
uniform sample (documented in the MLflow run params); the default uses every row.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from contracts.features import DEFAULT_SPEC, FeatureSpec, feature_spec
from contracts.models import FEATURE_SERVICES, KINDS
from contracts.vocabulary import DEFAULT_VOCABULARY, Vocabulary, load_vocabulary
from service.features.vectors import channel_matrix, propensity_matrix, send_time_matrix
from training.settings import paths

__all__ = [
    "KINDS",
    "SERVICES",
    "SOURCE",
    "SOURCE_HISTORY",
    "SOURCE_LOG",
    "Dataset",
    "ModelData",
    "build_datasets",
    "data_spec",
    "fingerprint",
    "load_vocabulary_of_data",
    "raw_columns",
    "table_path",
]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

SERVICES = FEATURE_SERVICES
TEST_SHARE = 0.2
#: held-out sends valued off-policy at most (a seeded sample beyond; bounds the extra join)
OPE_MAX_ROWS = 50_000
#: below this share of rows on either side of the time cutoff, the split is by customer
MIN_SIDE_SHARE = 0.05
#: columns of the world's ``messages.parquet``: the entity rows of every training set. Rows
#: made from the decision log (:mod:`training.measurement.log_training`) have the same
#: columns plus ``source`` and ``weight``.
MESSAGE_COLS = (
    "message_id",
    "customer_id",
    "offer_id",
    "channel",
    "sent_at",
    "local_hour",
    "policy",
    "delivered",
    "opened",
    "clicked",
    "converted",
    "revenue",
)
#: the column that says where a training row came from, and its two values: ``history``, the
#: messages table (:func:`load_messages`), and ``log``, the service's decision log
#: (:func:`training.measurement.log_training.rows_from_log`). It is the only mark of a log
#: row: a log row's ``message_id`` is ``"L" + decision_id`` to keep the ids unique, but a
#: company's own send ids may begin with "L" too, so nothing is inferred from the id.
SOURCE = "source"
SOURCE_HISTORY = "history"
SOURCE_LOG = "log"
_KEYS = ("message_id", "customer_id", "offer_id", "event_timestamp")
#: optional columns kept when present: ``propensity``, the logging policy's probability of the
#: send; ``offer_propensity``, its probability of the offer given the send's channel and time
#: (what the off-policy value of an offer policy needs; ``propensity`` stands in without it)
OPTIONAL_COLS = ("propensity", "offer_propensity")


@dataclass
class ModelData:
    """Rows of one model: message columns (``meta``) and the point-in-time raw features."""

    kind: str
    meta: pd.DataFrame  # MESSAGE_COLS + source + now_day + is_test, aligned with ``raw``
    raw: dict[str, F64]
    y: npt.NDArray[np.int64]
    spec: FeatureSpec = DEFAULT_SPEC
    x: F32 = field(init=False)

    def __post_init__(self) -> None:
        self.x = matrix(self.kind, self.raw, self.meta, self.spec)

    @property
    def train(self) -> npt.NDArray[np.bool_]:
        out: npt.NDArray[np.bool_] = ~self.meta["is_test"].to_numpy(dtype=bool)
        return out

    @property
    def test(self) -> npt.NDArray[np.bool_]:
        out: npt.NDArray[np.bool_] = self.meta["is_test"].to_numpy(dtype=bool)
        return out

    @property
    def from_log(self) -> npt.NDArray[np.bool_]:
        """Rows made from the decision log (``source == "log"``); history rows are False."""
        if SOURCE not in self.meta:
            return np.zeros(len(self.meta), dtype=bool)
        out: npt.NDArray[np.bool_] = (self.meta[SOURCE] == SOURCE_LOG).to_numpy(dtype=bool)
        return out

    @property
    def weight(self) -> F64:
        """Sample weights (1 for historical messages, inverse propensity for log rows)."""
        if "weight" not in self.meta:
            return np.ones(len(self.meta))
        out: F64 = self.meta["weight"].to_numpy(dtype=np.float64)
        return out

    def subset_raw(self, mask: npt.NDArray[np.bool_]) -> dict[str, F64]:
        return {k: v[mask] for k, v in self.raw.items()}


@dataclass
class Dataset:
    models: dict[str, ModelData]
    window: dict[str, str]
    cutoff: pd.Timestamp
    messages: pd.DataFrame  # all messages (for priors and baselines)
    offers: pd.DataFrame
    params: dict[str, Any]
    spec: FeatureSpec = DEFAULT_SPEC
    #: held-out sends that carry the logging policy's propensity (every send, not only the
    #: opened ones; features through the propensity service): the rows of the off-policy
    #: value of the candidate; None when the data has no propensities
    ope: ModelData | None = None


def table_path(name: str) -> Path:
    """A contract table of the data folder: ``raw/<name>.parquet`` (after ``ingest``), else
    ``<name>.parquet`` (world folders written before the raw layout)."""
    root = paths().data_dir
    raw = root / "raw" / f"{name}.parquet"
    return raw if raw.exists() else root / f"{name}.parquet"


def load_vocabulary_of_data() -> Vocabulary:
    """The data folder's vocabulary (``vocabulary.json``), else the synthetic world's."""
    path = paths().data_dir / "vocabulary.json"
    return load_vocabulary(path) if path.exists() else DEFAULT_VOCABULARY


def data_spec() -> FeatureSpec:
    """Feature names of the data folder's vocabulary."""
    return feature_spec(load_vocabulary_of_data())


def channel_index(names: pd.Series | npt.NDArray[Any], spec: FeatureSpec = DEFAULT_SPEC) -> I64:
    codes = pd.Categorical(np.asarray(names), categories=list(spec.channels)).codes
    out: I64 = np.asarray(codes, dtype=np.int64)
    return out


def raw_columns(df: pd.DataFrame) -> dict[str, F64]:
    """Feature columns of a joined frame as float64 arrays (NaN where missing)."""
    skip = {
        *MESSAGE_COLS,
        *OPTIONAL_COLS,
        SOURCE,
        "event_timestamp",
        "now_day",
        "is_test",
        "weight",
    }
    out: dict[str, F64] = {}
    for c in df.columns:
        if c in skip:
            continue
        out[c] = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return out


def now_days(sent_at: pd.Series) -> F64:
    """Send time in days since 1970-01-01 (float), the ``now_day`` of vectors.py."""
    ts = pd.to_datetime(sent_at, utc=True)
    secs = (ts - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    out: F64 = np.asarray(secs.to_numpy(dtype=np.float64) / 86400.0, dtype=np.float64)
    return out


def matrix(
    kind: str, raw: dict[str, F64], meta: pd.DataFrame, spec: FeatureSpec = DEFAULT_SPEC
) -> F32:
    """The model input matrix of ``kind`` for rows ``meta`` (one row per message)."""
    n = len(meta)
    cust = np.arange(n, dtype=np.int64)
    now = meta["now_day"].to_numpy(dtype=np.float64)
    ch = channel_index(meta["channel"], spec)
    if kind == "propensity":
        return propensity_matrix(
            spec,
            raw,
            now,
            cust,
            raw["category_idx"].astype(np.int64),
            raw["price"],
            raw["margin"],
            ch,
        )
    if kind == "send_time":
        return send_time_matrix(spec, raw, now, cust, meta["local_hour"].to_numpy(dtype=np.int64))
    if kind == "channel":
        return channel_matrix(spec, raw, now, cust, ch)
    raise ValueError(kind)


def fingerprint(x: F32, y: npt.NDArray[Any]) -> str:
    """sha256 of the training rows (features and labels), for lineage in MLflow."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(x).tobytes())
    h.update(np.ascontiguousarray(y.astype(np.int8)).tobytes())
    return h.hexdigest()


def local_hours(messages: pd.DataFrame) -> npt.NDArray[np.int64]:
    """Hour of ``sent_at`` in each customer's time zone (the customers table's IANA
    ``timezone``; UTC where unknown)."""
    sent = pd.to_datetime(messages["sent_at"], utc=True)
    hours: npt.NDArray[np.int64] = np.array(sent.dt.hour.to_numpy(), dtype=np.int64)
    path = table_path("customers")
    if not path.exists():
        return hours
    import pyarrow.parquet as pq

    if "timezone" not in pq.read_schema(path).names:
        return hours
    tz = pd.read_parquet(path, columns=["customer_id", "timezone"])
    zone = (
        messages[["customer_id"]]
        .astype({"customer_id": str})
        .merge(tz.astype({"customer_id": str}), on="customer_id", how="left")["timezone"]
        .fillna("UTC")
        .to_numpy()
    )
    for name in pd.unique(zone):
        mask = zone == name
        try:
            hours[mask] = sent[mask].dt.tz_convert(str(name)).dt.hour.to_numpy(dtype=np.int64)
        except Exception:  # an unknown zone name: ingest reports it; keep UTC
            continue
    return hours


def load_messages() -> pd.DataFrame:
    """The messages table with the columns training uses (see the module doc)."""
    import pyarrow.parquet as pq

    path = table_path("messages")
    have = set(pq.read_schema(path).names)
    wanted = [c for c in (*MESSAGE_COLS, *OPTIONAL_COLS) if c in have]
    m = pd.read_parquet(path, columns=wanted)
    m["sent_at"] = pd.to_datetime(m["sent_at"], utc=True)
    for c in ("message_id", "customer_id", "offer_id", "channel"):
        m[c] = m[c].astype(str)
    for c in ("delivered", "opened", "clicked", "converted"):
        m[c] = m[c].fillna(False).astype(bool) if c in m else m["opened"].astype(bool)
    if "revenue" not in m:
        m["revenue"] = 0.0
    m["revenue"] = m["revenue"].fillna(0.0).astype(np.float64)
    if "local_hour" not in m:
        m["local_hour"] = local_hours(m)
    if "policy" not in m:
        m["policy"] = "unknown"
    m["policy"] = m["policy"].fillna("unknown").astype(str)
    for c in OPTIONAL_COLS:
        if c not in m:
            m[c] = np.nan
    m["offer_propensity"] = m["offer_propensity"].fillna(m["propensity"])
    m[SOURCE] = SOURCE_HISTORY
    return m.sort_values(["sent_at", "message_id"], kind="stable").reset_index(drop=True)


def load_offers(spec: FeatureSpec) -> pd.DataFrame:
    """The offers table, with ``category_idx`` in the vocabulary's order."""
    offers = pd.read_parquet(table_path("offers"))
    offers["offer_id"] = offers["offer_id"].astype(str)
    offers["category_idx"] = [spec.categories.index(str(c)) for c in offers["category"]]
    for c in ("valid_from", "valid_to"):
        offers[c] = pd.to_datetime(offers[c], utc=True)
    return offers


def split_test(
    sent_at: pd.Series, customers: pd.Series, seed: int
) -> tuple[npt.NDArray[np.bool_], pd.Timestamp, str]:
    """(is_test, cutoff, kind): by time at the 80% quantile of send time, or, when the send
    times are too tied for that (see the module doc), a seeded 20% of the customers."""
    cutoff = pd.Timestamp(sent_at.quantile(1.0 - TEST_SHARE))  # type: ignore[arg-type]
    test = (sent_at >= cutoff).to_numpy(dtype=bool)
    share = float(test.mean()) if len(test) else 0.0
    if MIN_SIDE_SHARE <= share <= 1.0 - MIN_SIDE_SHARE:
        return test, cutoff, "time"
    ids = pd.Series(customers.astype(str).unique())
    h = pd.util.hash_pandas_object(ids, index=False, hash_key=f"nextbest{seed:08d}"[:16])
    held = set(ids[(h.to_numpy() % 1000) < int(TEST_SHARE * 1000)])
    return customers.astype(str).isin(held).to_numpy(dtype=bool), cutoff, "customer"


def historical(store: Any, service: str, rows: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time join of ``rows`` (messages) through the feature service ``service``."""
    entity = rows[["message_id", "customer_id", "offer_id", "sent_at"]].rename(
        columns={"sent_at": "event_timestamp"}
    )
    # Feast's DuckDB store takes microseconds: a log row's nanoseconds would fail its cast.
    # Flooring can only make a send look earlier (a snapshot in that microsecond is not used).
    ts = pd.to_datetime(entity["event_timestamp"], utc=True).dt.floor("us")
    entity["event_timestamp"] = ts.astype("datetime64[us, UTC]")
    fs = store.get_feature_service(service)
    joined = store.get_historical_features(entity_df=entity, features=fs).to_df()
    # rows with no snapshot of some view at their send time carry no information from it:
    # drop them, as Feast's file (Dask) offline store did (the DuckDB store keeps them, NaN)
    for proj in fs.feature_view_projections:
        cols = [f.name for f in proj.features if f.name in joined]
        if cols:
            joined = joined[joined[cols].notna().any(axis=1)]
    joined = joined.drop(columns=[c for c in ("customer_id", "offer_id") if c in joined])
    joined = joined.drop(columns=["event_timestamp"])
    out = rows.merge(joined, on="message_id", how="inner", validate="one_to_one")
    return out.sort_values(["sent_at", "message_id"], kind="stable").reset_index(drop=True)


def build_datasets(
    store: Any,
    max_rows: int | None = None,
    seed: int = 42,
    progress: bool = True,
    extra: pd.DataFrame | None = None,
) -> Dataset:
    from tqdm import tqdm

    spec = data_spec()
    messages = load_messages()
    offers = load_offers(spec)
    test_all, cutoff, split = split_test(messages["sent_at"], messages["customer_id"], seed)
    held_customers = set(messages.loc[test_all, "customer_id"]) if split == "customer" else set()
    history = messages
    log_cutoff: pd.Timestamp | None = None
    if extra is not None and len(extra):
        if SOURCE not in extra or not (extra[SOURCE] == SOURCE_LOG).all():
            raise ValueError(f"extra: rows from the decision log ({SOURCE} == {SOURCE_LOG!r}) only")
        log_rows = extra[[*MESSAGE_COLS, SOURCE, "weight"]].copy()
        log_rows["sent_at"] = pd.to_datetime(log_rows["sent_at"], utc=True)
        log_rows["propensity"] = np.nan
        log_rows["offer_propensity"] = np.nan
        log_cutoff = pd.Timestamp(log_rows["sent_at"].quantile(1.0 - TEST_SHARE))  # type: ignore[arg-type]
        messages = pd.concat([messages.assign(weight=1.0), log_rows], ignore_index=True)
        messages = messages.sort_values("sent_at", kind="stable").reset_index(drop=True)
    if split == "time":
        window = {
            "train_start": pd.Timestamp(messages["sent_at"].min()).isoformat(),
            "train_end": cutoff.isoformat(),
            "test_start": cutoff.isoformat(),
            "test_end": pd.Timestamp(messages["sent_at"].max()).isoformat(),
        }
    else:  # the same period on both sides: say so
        window = {
            "train_start": pd.Timestamp(messages["sent_at"].min()).isoformat(),
            "train_end": pd.Timestamp(messages["sent_at"].max()).isoformat(),
            "test_start": pd.Timestamp(messages["sent_at"].min()).isoformat(),
            "test_end": pd.Timestamp(messages["sent_at"].max()).isoformat(),
            "split": "customer (send times tied: 20% of the customers held out)",
        }
    random_sends = messages["policy"] == "random"
    # random-policy sends only when the data has them: the rule policy always sent at 10:00
    # by email, which confounds the hour with the channel (hour 10 looks good because email
    # does); the service multiplies the channel model's P(open | channel) by the send-time
    # model's lift for the hour, so the channel model must estimate the open rate averaged
    # over hours (held-out log loss on random sends: 0.4976 vs 0.4999 with every send).
    # Data without a random policy: every delivered send (confounded; the docs say so).
    unconfounded = random_sends if bool(random_sends.any()) else pd.Series(True, messages.index)
    selections = {
        "propensity": (messages["opened"], "converted"),
        "send_time": (messages["delivered"] & unconfounded, "opened"),
        "channel": (messages["delivered"] & unconfounded, "opened"),
    }
    models: dict[str, ModelData] = {}
    for kind in tqdm(KINDS, desc="feast point-in-time joins", disable=not progress):
        mask, label = selections[kind]
        rows = messages[mask.to_numpy(dtype=bool)]
        if max_rows is not None and len(rows) > max_rows:
            rows = rows.sample(n=max_rows, random_state=seed).sort_values("sent_at")
        joined = historical(store, SERVICES[kind], rows)
        joined["now_day"] = now_days(joined["sent_at"])
        has_log = bool((rows[SOURCE] == SOURCE_LOG).any())
        cut = log_cutoff if log_cutoff is not None and has_log else cutoff
        if split == "customer":
            joined["is_test"] = joined["customer_id"].astype(str).isin(held_customers)
        else:
            joined["is_test"] = joined["sent_at"] >= cut
        cols = [
            *MESSAGE_COLS,
            *OPTIONAL_COLS,
            SOURCE,
            "now_day",
            "is_test",
            *(["weight"] if "weight" in joined else []),
        ]
        meta = joined[cols].copy()
        models[kind] = ModelData(
            kind=kind,
            meta=meta,
            raw=raw_columns(joined),
            y=joined[label].to_numpy(dtype=np.int64),
            spec=spec,
        )
    ope: ModelData | None = None
    logged = history[test_all & history["offer_propensity"].notna().to_numpy()]
    logged = logged[(logged["offer_propensity"] > 0) & (logged["offer_propensity"] <= 1)]
    if len(logged):
        cap = min(max_rows, OPE_MAX_ROWS) if max_rows is not None else OPE_MAX_ROWS
        if len(logged) > cap:
            logged = logged.sample(n=cap, random_state=seed).sort_values("sent_at")
        joined = historical(store, SERVICES["propensity"], logged)
        joined["now_day"] = now_days(joined["sent_at"])
        joined["is_test"] = True
        ope = ModelData(
            kind="propensity",
            meta=joined[[*MESSAGE_COLS, *OPTIONAL_COLS, SOURCE, "now_day", "is_test"]].copy(),
            raw=raw_columns(joined),
            y=joined["converted"].to_numpy(dtype=np.int64),
            spec=spec,
        )
    params: dict[str, Any] = {
        "max_rows": max_rows if max_rows is not None else "all",
        "seed": seed,
        "split": split,
    }
    if log_cutoff is not None and extra is not None:
        params["log_rows"] = len(extra)
        params["log_test_start"] = log_cutoff.isoformat()
        window["log_test_start"] = log_cutoff.isoformat()
    return Dataset(models, window, cutoff, history, offers, params, spec, ope)
