"""Feature views and feature services, in dependency order.

Feature names are the contract with `training/` (column order of the models) and with the
service's fast Redis reader; the model bundle stores the exact order used.
"""

from datetime import timedelta

from entities import customer, offer
from feast import FeatureService, FeatureView, Field
from feast.types import Float32, Int64
from sources import behaviour_source, engagement_source, offer_source, profile_source

CHANNELS = ("email", "push", "sms", "in_app", "web")
CATEGORIES = ("outdoor", "apparel", "electronics", "home", "beauty", "books", "sports", "grocery")

customer_profile = FeatureView(
    name="customer_profile",
    entities=[customer],
    ttl=timedelta(days=3650),
    schema=[
        Field(name="tz_offset", dtype=Int64, description="UTC offset in hours"),
        Field(name="opted_out", dtype=Int64, description="1 = opted out of all marketing"),
        Field(name="lifecycle", dtype=Int64, description="0 new, 1 active, 2 lapsing"),
        Field(name="signup_day", dtype=Int64, description="days since 1970-01-01 at sign-up"),
        *[
            Field(name=f"consent_{ch}", dtype=Int64, description=f"1 = may be contacted by {ch}")
            for ch in CHANNELS
        ],
    ],
    source=profile_source,
    online=True,
    tags={"owner": "crm", "group": "profile"},
)

customer_behaviour = FeatureView(
    name="customer_behaviour",
    entities=[customer],
    ttl=timedelta(days=21),
    schema=[
        Field(name="recency_days", dtype=Float32, description="days since last purchase"),
        Field(name="frequency_90d", dtype=Int64, description="purchases in 90 days"),
        Field(name="monetary_90d", dtype=Float32, description="revenue in 90 days"),
        Field(name="cart_items", dtype=Int64, description="items in the open cart"),
        Field(name="cart_abandons_7d", dtype=Int64, description="abandoned carts in 7 days"),
        Field(name="views_total", dtype=Int64, description="page views since sign-up"),
        *[
            Field(name=f"views_{cat}_30d", dtype=Int64, description=f"views of {cat}, 30 days")
            for cat in CATEGORIES
        ],
    ],
    source=behaviour_source,
    online=True,
    tags={"owner": "analytics", "group": "behaviour"},
)

customer_engagement = FeatureView(
    name="customer_engagement",
    entities=[customer],
    ttl=timedelta(days=21),
    schema=[
        *[
            Field(name=f"sent_{ch}", dtype=Int64, description=f"messages sent by {ch}")
            for ch in CHANNELS
        ],
        *[
            Field(name=f"open_rate_{ch}", dtype=Float32, description=f"open rate on {ch}")
            for ch in CHANNELS
        ],
        Field(name="click_rate", dtype=Float32, description="clicks per open"),
        *[
            Field(
                name=f"act_share_h{h:02d}", dtype=Float32, description=f"activity share, local {h}h"
            )
            for h in range(24)
        ],
    ],
    source=engagement_source,
    online=True,
    tags={"owner": "analytics", "group": "engagement"},
)

offer_catalogue = FeatureView(
    name="offer_catalogue",
    entities=[offer],
    ttl=timedelta(days=3650),
    schema=[
        Field(name="category_idx", dtype=Int64),
        Field(name="price", dtype=Float32),
        Field(name="margin", dtype=Float32),
    ],
    source=offer_source,
    online=True,
    tags={"owner": "merchandising", "group": "catalogue"},
)

propensity_v1 = FeatureService(
    name="propensity_v1",
    features=[customer_profile, customer_behaviour, customer_engagement, offer_catalogue],
    description="Offer propensity: customer x offer x channel.",
)

send_time_v1 = FeatureService(
    name="send_time_v1",
    features=[
        customer_profile[["tz_offset", "lifecycle", "signup_day"]],
        customer_engagement,
    ],
    description="Send time: engagement by local hour.",
)

channel_v1 = FeatureService(
    name="channel_v1",
    features=[customer_profile, customer_engagement],
    description="Channel: engagement per channel.",
)
