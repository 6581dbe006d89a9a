"""Model input matrices: one implementation shared by training and the service.

The three models take float32 matrices whose columns are named (in order) by the
:class:`contracts.features.FeatureSpec` of the vocabulary they were trained with
(``spec.propensity_features``, ``spec.send_time_features``, ``spec.channel_features``).
Both the training pipeline (millions of rows at once) and ``/decide`` (one customer, a few
dozen rows) build them with the functions below, so the two can never drift apart. Inputs
are column arrays (``raw[name]`` is a float64 array, NaN where missing), so the same code
serves one customer or many. Large-magnitude values (calendar days) are rebased to small
ones here: ONNX tree ensembles compare in float32.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from contracts.features import HOURS, FeatureSpec

__all__ = ["channel_matrix", "customer_matrix", "propensity_matrix", "send_time_matrix"]

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
Raw = Mapping[str, F64]


def _col(raw: Raw, name: str, n: int) -> F64:
    v = raw.get(name)
    if v is None:
        return np.full(n, np.nan)
    return np.asarray(v, dtype=np.float64)


def _n(raw: Raw) -> int:
    for v in raw.values():
        return len(v)
    return 0


def customer_matrix(spec: FeatureSpec, raw: Raw, now_day: F64 | float) -> F64:
    """(n_customers, len(spec.customer_features)); ``now_day`` = days since 1970-01-01."""
    n = _n(raw)
    out = np.empty((n, len(spec.customer_features)))
    for j, name in enumerate(spec.customer_features):
        if name == "tenure_days":
            out[:, j] = np.asarray(now_day, dtype=np.float64) - _col(raw, "signup_day", n)
        else:
            out[:, j] = _col(raw, name, n)
    return out


def _stack_per_channel(spec: FeatureSpec, raw: Raw, prefix: str, n: int) -> F64:
    return np.stack([_col(raw, f"{prefix}_{c}", n) for c in spec.channels], axis=1)


def propensity_matrix(
    spec: FeatureSpec,
    raw: Raw,
    now_day: F64 | float,
    cust: I64,
    offer_category: I64,
    offer_price: F64,
    offer_margin: F64,
    channel: I64,
) -> F32:
    """One row per (customer row ``cust[i]``, offer, ``channel[i]``)."""
    n = _n(raw)
    base = customer_matrix(spec, raw, now_day)[cust]
    views = np.stack([_col(raw, f"views_{c}_30d", n) for c in spec.categories], axis=1)[cust]
    v_cat = views[np.arange(len(cust)), offer_category]
    v_all = views.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(v_all > 0, v_cat / v_all, np.nan)
    open_rate = _stack_per_channel(spec, raw, "open_rate", n)[cust, channel]
    sent = _stack_per_channel(spec, raw, "sent", n)[cust, channel]
    extra = np.stack(
        [channel, offer_category, offer_price, offer_margin, v_cat, share, open_rate, sent],
        axis=1,
    ).astype(np.float64)
    return np.hstack([base, extra, _taste(spec, raw, cust, offer_category, offer_price)]).astype(
        np.float32
    )


def _taste(spec: FeatureSpec, raw: Raw, cust: I64, category: I64, price: F64) -> F64:
    """``TASTE_OFFER_FEATURES``: the offer's category in the customer's whole history (views,
    cart adds, purchases, their shares, days since the last of them) and the offer's price
    against the mean price the customer buys and views (NaN where unknown)."""
    n = _n(raw)
    rows = np.arange(len(cust))

    def per_cat(prefix: str) -> F64:
        m = np.stack([_col(raw, f"{prefix}_{c}", n) for c in spec.categories], axis=1)[cust]
        return m

    views, carts, buys, days = (per_cat(p) for p in ("views", "carts", "buys", "days"))
    with np.errstate(invalid="ignore", divide="ignore"):
        v_all, b_all = views.sum(axis=1), buys.sum(axis=1)
        v_share = np.where(v_all > 0, views[rows, category] / v_all, np.nan)
        b_share = np.where(b_all > 0, buys[rows, category] / b_all, np.nan)
        vs_buys = price / _col(raw, "avg_buy_price", n)[cust]
        vs_views = price / _col(raw, "avg_view_price", n)[cust]
    cols = [
        views[rows, category], v_share, carts[rows, category], buys[rows, category], b_share,
        days[rows, category], vs_buys, vs_views,
    ]  # fmt: skip
    return np.stack(cols, axis=1)


def send_time_matrix(
    spec: FeatureSpec, raw: Raw, now_day: F64 | float, cust: I64, local_hour: I64
) -> F32:
    """One row per (customer row ``cust[i]``, local hour ``local_hour[i]``)."""
    n = _n(raw)
    base_all = customer_matrix(spec, raw, now_day)
    base = base_all[cust][:, spec.send_time_base_idx]
    shares = np.stack([_col(raw, f"act_share_h{h:02d}", n) for h in range(HOURS)], axis=1)[cust]
    rows = np.arange(len(cust))
    h = np.asarray(local_hour, dtype=np.int64) % HOURS
    this = shares[rows, h]
    near = shares[rows, (h - 1) % HOURS] + this + shares[rows, (h + 1) % HOURS]
    peak = np.nanargmax(np.where(np.isnan(shares), -1.0, shares), axis=1)
    has = np.nansum(shares, axis=1) > 0
    dist = np.abs(h - peak)
    dist = np.where(has, np.minimum(dist, HOURS - dist), np.nan)
    extra = np.stack([h.astype(np.float64), this, near, dist.astype(np.float64)], axis=1)
    return np.hstack([base, extra]).astype(np.float32)


def channel_matrix(
    spec: FeatureSpec, raw: Raw, now_day: F64 | float, cust: I64, channel: I64
) -> F32:
    """One row per (customer row ``cust[i]``, channel ``channel[i]``)."""
    n = _n(raw)
    base_all = customer_matrix(spec, raw, now_day)
    base = base_all[cust][:, spec.channel_base_idx]
    open_rate = _stack_per_channel(spec, raw, "open_rate", n)[cust, channel]
    sent = _stack_per_channel(spec, raw, "sent", n)[cust, channel]
    extra = np.stack([channel.astype(np.float64), open_rate, sent], axis=1)
    return np.hstack([base, extra]).astype(np.float32)
