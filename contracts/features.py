"""Feature names: the Feast views' schemas and the three models' input columns, in one place.

Everything here is derived from a :class:`~contracts.vocabulary.Vocabulary` (per-channel and
per-category columns), so the feature repository (``feature_repo/features.py``), the offline
pipeline (``training/``) and the service (``service/features/vectors.py``, the Redis reader)
always agree on names and order. :data:`DEFAULT_SPEC` is the synthetic world's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import Literal

from contracts.vocabulary import DEFAULT_VOCABULARY, Vocabulary

__all__ = [
    "BEHAVIOUR_VIEW",
    "DEFAULT_SPEC",
    "ENGAGEMENT_VIEW",
    "HOURS",
    "OFFER_VIEW",
    "PROFILE_VIEW",
    "REALTIME_VIEW",
    "TASTE_OFFER_FEATURES",
    "Feature",
    "FeatureSpec",
    "View",
    "feature_spec",
]

HOURS = 24
Dtype = Literal["int64", "float32"]

PROFILE_VIEW = "customer_profile"
BEHAVIOUR_VIEW = "customer_behaviour"
ENGAGEMENT_VIEW = "customer_engagement"
OFFER_VIEW = "offer_catalogue"
REALTIME_VIEW = "customer_realtime"


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    dtype: Dtype
    description: str = ""


@dataclass(frozen=True, slots=True)
class View:
    """A Feast feature view's contract: name, entity join key, schema, TTL."""

    name: str
    join_key: str
    features: tuple[Feature, ...]
    ttl: timedelta
    description: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)


def _profile(v: Vocabulary) -> View:
    return View(
        PROFILE_VIEW,
        "customer_id",
        (
            Feature("tz_offset", "int64", "UTC offset in hours"),
            Feature("opted_out", "int64", "1 = opted out of all marketing"),
            Feature("lifecycle", "int64", "0 new, 1 active, 2 lapsing"),
            Feature("signup_day", "int64", "days since 1970-01-01 at sign-up"),
            *(Feature(f"consent_{c}", "int64", f"1 = may be contacted by {c}") for c in v.channels),
        ),
        timedelta(days=3650),
        "One row per customer and profile change (consent, time zone, lifecycle).",
    )


def _behaviour(v: Vocabulary) -> View:
    return View(
        BEHAVIOUR_VIEW,
        "customer_id",
        (
            Feature("recency_days", "float32", "days since last purchase"),
            Feature("frequency_90d", "int64", "purchases in 90 days"),
            Feature("monetary_90d", "float32", "revenue in 90 days"),
            Feature("cart_items", "int64", "items in the open cart"),
            Feature("cart_abandons_7d", "int64", "abandoned carts in 7 days"),
            Feature("views_total", "int64", "page views since sign-up"),
            *(Feature(f"views_{c}_30d", "int64", f"views of {c}, 30 days") for c in v.categories),
            # per-category taste over the whole history (training/features/)
            *(Feature(f"views_{c}", "int64", f"views of {c}, all history") for c in v.categories),
            *(Feature(f"carts_{c}", "int64", f"cart adds of {c}") for c in v.categories),
            *(Feature(f"buys_{c}", "int64", f"purchases of {c}") for c in v.categories),
            *(
                Feature(f"days_{c}", "float32", f"days since the last view/cart/buy of {c}")
                for c in v.categories
            ),
            Feature("avg_buy_price", "float32", "mean price of the purchases"),
            Feature("avg_view_price", "float32", "mean price of the offers viewed"),
        ),
        timedelta(days=21),
        "Point-in-time snapshots of behavioural aggregates (RFM, cart, views).",
    )


def _engagement(v: Vocabulary) -> View:
    return View(
        ENGAGEMENT_VIEW,
        "customer_id",
        (
            *(Feature(f"sent_{c}", "int64", f"messages sent by {c}") for c in v.channels),
            *(Feature(f"open_rate_{c}", "float32", f"open rate on {c}") for c in v.channels),
            Feature("click_rate", "float32", "clicks per open"),
            *(
                Feature(f"act_share_h{h:02d}", "float32", f"activity share, local {h}h")
                for h in range(HOURS)
            ),
        ),
        timedelta(days=21),
        "Point-in-time snapshots of message engagement and activity hours.",
    )


OFFERS = View(
    OFFER_VIEW,
    "offer_id",
    (
        Feature("category_idx", "int64", "index of the category in the vocabulary"),
        Feature("price", "float32", "list price"),
        Feature("margin", "float32", "margin share of the price"),
    ),
    timedelta(days=3650),
    "The offer catalogue (category, price, margin).",
)

#: real-time features, written by the service from events (schema order of the view)
REALTIME = View(
    REALTIME_VIEW,
    "customer_id",
    (
        Feature("cart_items_rt", "int64", "items in the open cart, now"),
        Feature("cart_value_rt", "float32", "value of the open cart"),
        Feature("last_cart_add_ts", "int64", "epoch s of last cart add"),
        Feature("last_purchase_ts", "int64", "epoch s of last purchase"),
        Feature("purchases_1h", "int64", "purchases in the last hour"),
        Feature("session_views_1h", "int64", "page views in the last hour"),
        Feature("messages_opened_24h", "int64", "messages opened, 24 h"),
        Feature("last_event_ts", "int64", "epoch s of the last event"),
    ),
    timedelta(days=30),
    "Real-time features computed by the service from behavioural events.",
)


#: per (customer, offer) columns of the propensity model from the per-category taste
TASTE_OFFER_FEATURES: tuple[str, ...] = (
    "offer_category_views",
    "offer_category_view_share_all",
    "offer_category_carts",
    "offer_category_buys",
    "offer_category_buy_share",
    "offer_category_days",
    "offer_price_vs_buys",
    "offer_price_vs_views",
)


class FeatureSpec:
    """All feature names of one vocabulary: views, raw features, model input columns."""

    def __init__(self, vocabulary: Vocabulary) -> None:
        v = vocabulary
        self.vocabulary = v
        self.channels = v.channels
        self.categories = v.categories
        self.channel_index: dict[str, int] = {c: i for i, c in enumerate(v.channels)}
        self.profile = _profile(v)
        self.behaviour = _behaviour(v)
        self.engagement = _engagement(v)
        self.offers = OFFERS
        self.realtime = REALTIME
        #: the batch customer views the models read (Feast view -> feature names)
        self.customer_views: tuple[View, ...] = (self.profile, self.behaviour, self.engagement)
        self.raw: dict[str, tuple[str, ...]] = {w.name: w.names for w in self.customer_views}
        #: customer-level model columns (tenure is derived from signup_day and now)
        self.customer_features: tuple[str, ...] = (
            "tz_offset",
            "lifecycle",
            "tenure_days",
            "recency_days",
            "frequency_90d",
            "monetary_90d",
            "cart_items",
            "cart_abandons_7d",
            "views_total",
            *(f"views_{c}_30d" for c in v.categories),
            *(f"sent_{c}" for c in v.channels),
            *(f"open_rate_{c}" for c in v.channels),
            "click_rate",
        )
        self.propensity_features: tuple[str, ...] = (
            *self.customer_features,
            "channel",
            "offer_category",
            "offer_price",
            "offer_margin",
            "views_offer_category_30d",
            "offer_category_view_share",
            "open_rate_this_channel",
            "sent_this_channel",
            # the offer against the customer's taste (issue 16.5; service/features/vectors.py)
            *TASTE_OFFER_FEATURES,
        )
        self.send_time_base: tuple[str, ...] = (
            "tz_offset",
            "lifecycle",
            "tenure_days",
            "views_total",
            "click_rate",
            *(f"open_rate_{c}" for c in v.channels),
        )
        self.send_time_features: tuple[str, ...] = (
            *self.send_time_base,
            "hour",
            "act_share_this_hour",
            "act_share_near_hour",
            "act_peak_distance",
        )
        self.channel_base: tuple[str, ...] = (
            "tz_offset",
            "lifecycle",
            "tenure_days",
            "views_total",
            "click_rate",
            *(f"sent_{c}" for c in v.channels),
            *(f"open_rate_{c}" for c in v.channels),
        )
        self.channel_features: tuple[str, ...] = (
            *self.channel_base,
            "channel",
            "open_rate_this_channel",
            "sent_this_channel",
        )
        #: positions of the base columns in ``customer_features`` (precomputed for the hot path)
        self.send_time_base_idx: tuple[int, ...] = tuple(
            self.customer_features.index(f) for f in self.send_time_base
        )
        self.channel_base_idx: tuple[int, ...] = tuple(
            self.customer_features.index(f) for f in self.channel_base
        )
        #: model kind -> input column names, in order
        self.model_features: dict[str, tuple[str, ...]] = {
            "propensity": self.propensity_features,
            "send_time": self.send_time_features,
            "channel": self.channel_features,
        }

    def view(self, name: str) -> View:
        for w in (*self.customer_views, self.offers, self.realtime):
            if w.name == name:
                return w
        raise KeyError(name)


@cache
def feature_spec(vocabulary: Vocabulary = DEFAULT_VOCABULARY) -> FeatureSpec:
    """The (cached) spec of a vocabulary."""
    return FeatureSpec(vocabulary)


DEFAULT_SPEC = feature_spec(DEFAULT_VOCABULARY)
