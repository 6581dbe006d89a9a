"""Model input vectors: one definition shared by training and the service.

The three models take float32 matrices whose columns are named (in order) by
``PROPENSITY_FEATURES``, ``SEND_TIME_FEATURES`` and ``CHANNEL_FEATURES``. Both the training
pipeline (millions of rows at once) and ``/decide`` (one customer, a few dozen rows) build
them with the functions below, so the two can never drift apart. Inputs are column arrays
(``raw[name]`` is a float64 array, NaN where missing), so the same code serves one customer
or many. Large-magnitude values (calendar days) are rebased to small ones here: ONNX tree
ensembles compare in float32.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

__all__ = [
    "CATEGORIES",
    "CHANNELS",
    "CHANNEL_FEATURES",
    "CUSTOMER_FEATURES",
    "PROPENSITY_FEATURES",
    "RAW_FEATURES",
    "SEND_TIME_FEATURES",
    "channel_matrix",
    "propensity_matrix",
    "send_time_matrix",
]

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
Raw = Mapping[str, F64]

CHANNELS: tuple[str, ...] = ("email", "push", "sms", "in_app", "web")
CATEGORIES: tuple[str, ...] = (
    "outdoor",
    "apparel",
    "electronics",
    "home",
    "beauty",
    "books",
    "sports",
    "grocery",
)
HOURS = 24

PROFILE_RAW = (
    "tz_offset",
    "opted_out",
    "lifecycle",
    "signup_day",
    *(f"consent_{c}" for c in CHANNELS),
)
BEHAVIOUR_RAW = (
    "recency_days",
    "frequency_90d",
    "monetary_90d",
    "cart_items",
    "cart_abandons_7d",
    "views_total",
    *(f"views_{c}_30d" for c in CATEGORIES),
)
ENGAGEMENT_RAW = (
    *(f"sent_{c}" for c in CHANNELS),
    *(f"open_rate_{c}" for c in CHANNELS),
    "click_rate",
    *(f"act_share_h{h:02d}" for h in range(HOURS)),
)
#: feature view -> feature names, as defined in feature_repo/features.py
RAW_FEATURES: dict[str, tuple[str, ...]] = {
    "customer_profile": PROFILE_RAW,
    "customer_behaviour": BEHAVIOUR_RAW,
    "customer_engagement": ENGAGEMENT_RAW,
}

# Customer-level columns shared by the models (tenure is derived from signup_day and now).
CUSTOMER_FEATURES: tuple[str, ...] = (
    "tz_offset",
    "lifecycle",
    "tenure_days",
    "recency_days",
    "frequency_90d",
    "monetary_90d",
    "cart_items",
    "cart_abandons_7d",
    "views_total",
    *(f"views_{c}_30d" for c in CATEGORIES),
    *(f"sent_{c}" for c in CHANNELS),
    *(f"open_rate_{c}" for c in CHANNELS),
    "click_rate",
)
PROPENSITY_FEATURES: tuple[str, ...] = (
    *CUSTOMER_FEATURES,
    "channel",
    "offer_category",
    "offer_price",
    "offer_margin",
    "views_offer_category_30d",
    "offer_category_view_share",
    "open_rate_this_channel",
    "sent_this_channel",
)
SEND_TIME_FEATURES: tuple[str, ...] = (
    "tz_offset",
    "lifecycle",
    "tenure_days",
    "views_total",
    "click_rate",
    *(f"open_rate_{c}" for c in CHANNELS),
    "hour",
    "act_share_this_hour",
    "act_share_near_hour",
    "act_peak_distance",
)
CHANNEL_FEATURES: tuple[str, ...] = (
    "tz_offset",
    "lifecycle",
    "tenure_days",
    "views_total",
    "click_rate",
    *(f"sent_{c}" for c in CHANNELS),
    *(f"open_rate_{c}" for c in CHANNELS),
    "channel",
    "open_rate_this_channel",
    "sent_this_channel",
)


def _col(raw: Raw, name: str, n: int) -> F64:
    v = raw.get(name)
    if v is None:
        return np.full(n, np.nan)
    return np.asarray(v, dtype=np.float64)


def _n(raw: Raw) -> int:
    for v in raw.values():
        return len(v)
    return 0


def customer_matrix(raw: Raw, now_day: F64 | float) -> F64:
    """(n_customers, len(CUSTOMER_FEATURES)); ``now_day`` = days since 1970-01-01."""
    n = _n(raw)
    out = np.empty((n, len(CUSTOMER_FEATURES)))
    for j, name in enumerate(CUSTOMER_FEATURES):
        if name == "tenure_days":
            out[:, j] = np.asarray(now_day, dtype=np.float64) - _col(raw, "signup_day", n)
        else:
            out[:, j] = _col(raw, name, n)
    return out


def _stack_per_channel(raw: Raw, prefix: str, n: int) -> F64:
    return np.stack([_col(raw, f"{prefix}_{c}", n) for c in CHANNELS], axis=1)


def propensity_matrix(
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
    base = customer_matrix(raw, now_day)[cust]
    views = np.stack([_col(raw, f"views_{c}_30d", n) for c in CATEGORIES], axis=1)[cust]
    v_cat = views[np.arange(len(cust)), offer_category]
    v_all = views.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(v_all > 0, v_cat / v_all, np.nan)
    open_rate = _stack_per_channel(raw, "open_rate", n)[cust, channel]
    sent = _stack_per_channel(raw, "sent", n)[cust, channel]
    extra = np.stack(
        [channel, offer_category, offer_price, offer_margin, v_cat, share, open_rate, sent],
        axis=1,
    ).astype(np.float64)
    return np.hstack([base, extra]).astype(np.float32)


def send_time_matrix(raw: Raw, now_day: F64 | float, cust: I64, local_hour: I64) -> F32:
    """One row per (customer row ``cust[i]``, local hour ``local_hour[i]``)."""
    n = _n(raw)
    base_all = customer_matrix(raw, now_day)
    idx = [CUSTOMER_FEATURES.index(f) for f in SEND_TIME_FEATURES[:10]]
    base = base_all[cust][:, idx]
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


def channel_matrix(raw: Raw, now_day: F64 | float, cust: I64, channel: I64) -> F32:
    """One row per (customer row ``cust[i]``, channel ``channel[i]``)."""
    n = _n(raw)
    base_all = customer_matrix(raw, now_day)
    idx = [CUSTOMER_FEATURES.index(f) for f in CHANNEL_FEATURES[:15]]
    base = base_all[cust][:, idx]
    open_rate = _stack_per_channel(raw, "open_rate", n)[cust, channel]
    sent = _stack_per_channel(raw, "sent", n)[cust, channel]
    extra = np.stack([channel.astype(np.float64), open_rate, sent], axis=1)
    return np.hstack([base, extra]).astype(np.float32)
