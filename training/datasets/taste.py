"""Per-category taste features, point in time, added to the behaviour snapshots.

For every row of ``customer_behaviour.parquet`` (a customer at snapshot time ``T``) and every
category of the vocabulary, from the customer's events strictly before ``T`` (the whole
history, not a window: a lapsing customer's taste does not expire with their last 30 days):

| column | what |
|---|---|
| ``views_<cat>`` | page views of the category's offers |
| ``carts_<cat>`` | cart adds of the category |
| ``buys_<cat>`` | purchases of the category (those a message converted included) |
| ``days_<cat>`` | days since the last view, cart add or purchase of the category (NaN: never) |
| ``avg_buy_price`` | mean price of the customer's purchases (NaN: none) |
| ``avg_view_price`` | mean price of the offers the customer viewed (NaN: none) |

The model reads them per (customer, offer) through ``service/features/vectors.py``: the
offer's category's views, carts, purchases, their shares, its recency, and the offer's price
against what the customer buys and looks at (price band relative to spend).

Issue 16.5: these belong in the feature step that computes every view from the raw tables;
until that is on this branch they are computed here, after ``generate``
(``python -m training taste`` adds them to an existing world).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from contracts.features import feature_spec
from contracts.vocabulary import DEFAULT_VOCABULARY, Vocabulary

__all__ = ["TASTE_PRICES", "add_taste", "taste_columns"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
TASTE_PRICES = ("avg_buy_price", "avg_view_price")


def taste_columns(vocabulary: Vocabulary = DEFAULT_VOCABULARY) -> list[str]:
    cats = vocabulary.categories
    return [
        *(f"views_{c}" for c in cats),
        *(f"carts_{c}" for c in cats),
        *(f"buys_{c}" for c in cats),
        *(f"days_{c}" for c in cats),
        *TASTE_PRICES,
    ]


def _seconds(ts: pd.Series) -> I64:
    ns = pd.to_datetime(ts, utc=True).astype("datetime64[ns, UTC]").astype("int64").to_numpy()
    out: I64 = np.asarray(ns // 1_000_000_000, dtype=np.int64)
    return out


class _Before:
    """Events of one kind sorted by (customer, time): counts, sums and the latest time
    strictly before each query (customer, T)."""

    def __init__(self, cust: I64, ts: I64, value: F64 | None = None) -> None:
        order = np.lexsort((ts, cust))
        self.cust, self.ts = cust[order], ts[order]
        self.csum = np.concatenate([[0.0], np.cumsum(value[order])]) if value is not None else None

    def query(self, cust: I64, t: I64) -> tuple[I64, I64]:
        """(index of the customer's first event, index after the last one before ``t``)."""
        first = np.searchsorted(self.cust, cust, side="left")
        end = first + self._count_before(cust, t, first)
        return first, end

    def _count_before(self, cust: I64, t: I64, first: I64) -> I64:
        last = np.searchsorted(self.cust, cust, side="right")
        out = np.zeros(len(cust), dtype=np.int64)
        # per-customer block search, vectorised: the position of t within ts[first:last]
        span = last - first
        has = span > 0
        if has.any():
            # shift times by customer so one global searchsorted works within each block
            big = np.int64(1) << np.int64(40)
            key = self.cust.astype(np.int64) * big + self.ts
            q = cust[has].astype(np.int64) * big + t[has]
            out[has] = np.searchsorted(key, q, side="left") - first[has]
        return out


def add_taste(data_dir: Path, vocabulary: Vocabulary = DEFAULT_VOCABULARY) -> int:
    """Add the taste columns to ``customer_behaviour.parquet`` in ``data_dir`` (idempotent:
    recomputed when present). Returns the number of rows."""
    path = data_dir / "customer_behaviour.parquet"
    beh = pd.read_parquet(path)
    beh = beh.drop(columns=[c for c in taste_columns(vocabulary) if c in beh])
    ev = pd.read_parquet(
        data_dir / "events.parquet",
        columns=["customer_id", "event_type", "offer_id", "category", "event_timestamp"],
    )
    ev = ev[ev["customer_id"].notna()]
    offers = pd.read_parquet(data_dir / "offers.parquet", columns=["offer_id", "price"])
    price = dict(zip(offers["offer_id"], offers["price"].astype(float), strict=True))
    ids = pd.Index(pd.unique(pd.concat([beh["customer_id"], ev["customer_id"]])))
    e_cust = ids.get_indexer(ev["customer_id"]).astype(np.int64)
    e_ts = _seconds(ev["event_timestamp"])
    e_type = ev["event_type"].to_numpy()
    e_cat = ev["category"].to_numpy()
    e_price = ev["offer_id"].map(price).to_numpy(dtype=np.float64, na_value=np.nan)
    q_cust = ids.get_indexer(beh["customer_id"]).astype(np.int64)
    q_ts = _seconds(beh["event_timestamp"])
    cols: dict[str, F64] = {}
    kinds = {"views": "page_view", "carts": "cart_add", "buys": "purchase"}
    last = {c: np.full(len(beh), -1, dtype=np.int64) for c in vocabulary.categories}
    for prefix, etype in kinds.items():
        for c in vocabulary.categories:
            m = (e_type == etype) & (e_cat == c)
            b = _Before(e_cust[m], e_ts[m])
            first, end = b.query(q_cust, q_ts)
            cols[f"{prefix}_{c}"] = (end - first).astype(np.float64)
            seen = end > first
            t_last = np.where(seen, b.ts[np.maximum(end - 1, 0)] if len(b.ts) else 0, -1)
            last[c] = np.maximum(last[c], t_last)
    for c in vocabulary.categories:
        cols[f"days_{c}"] = np.where(last[c] >= 0, (q_ts - last[c]) / 86400.0, np.nan)
    for name, etype in (("avg_buy_price", "purchase"), ("avg_view_price", "page_view")):
        m = (e_type == etype) & ~np.isnan(e_price)
        b = _Before(e_cust[m], e_ts[m], e_price[m])
        first, end = b.query(q_cust, q_ts)
        assert b.csum is not None
        n = end - first
        with np.errstate(invalid="ignore", divide="ignore"):
            cols[name] = np.where(n > 0, (b.csum[end] - b.csum[first]) / n, np.nan)
    spec = feature_spec(vocabulary)
    for name in taste_columns(vocabulary):
        dtype = next(f.dtype for f in spec.behaviour.features if f.name == name)
        beh[name] = (
            cols[name].astype(np.float32) if dtype == "float32" else cols[name].astype(np.int64)
        )
    beh.to_parquet(path, index=False)
    return len(beh)
