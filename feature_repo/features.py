"""Feature views and feature services, in dependency order.

The schemas come from the shared contract (``contracts/features.py``): the same names and
order the offline pipeline and the service's fast Redis reader use. The vocabulary
(channels, categories) is the one of the data being applied (``vocabulary.json`` next to the
source tables, else the synthetic world's default).
"""

import os

from entities import customer, offer
from feast import FeatureService, FeatureView, Field
from feast.types import Float32, Int64
from sources import DATA_DIR, behaviour_source, engagement_source, offer_source, profile_source

from contracts.features import View, feature_spec
from contracts.vocabulary import DEFAULT_VOCABULARY, load_vocabulary

_DTYPES = {"int64": Int64, "float32": Float32}
_VOCABULARY = os.path.join(DATA_DIR, "vocabulary.json")
SPEC = feature_spec(
    load_vocabulary(_VOCABULARY) if os.path.exists(_VOCABULARY) else DEFAULT_VOCABULARY
)


def fields(view: View) -> list[Field]:
    """Feast fields of a contract view (name, type, description)."""
    return [
        Field(name=f.name, dtype=_DTYPES[f.dtype], description=f.description) for f in view.features
    ]


customer_profile = FeatureView(
    name=SPEC.profile.name,
    entities=[customer],
    ttl=SPEC.profile.ttl,
    schema=fields(SPEC.profile),
    source=profile_source,
    online=True,
    tags={"owner": "crm", "group": "profile"},
)

customer_behaviour = FeatureView(
    name=SPEC.behaviour.name,
    entities=[customer],
    ttl=SPEC.behaviour.ttl,
    schema=fields(SPEC.behaviour),
    source=behaviour_source,
    online=True,
    tags={"owner": "analytics", "group": "behaviour"},
)

customer_engagement = FeatureView(
    name=SPEC.engagement.name,
    entities=[customer],
    ttl=SPEC.engagement.ttl,
    schema=fields(SPEC.engagement),
    source=engagement_source,
    online=True,
    tags={"owner": "analytics", "group": "engagement"},
)

offer_catalogue = FeatureView(
    name=SPEC.offers.name,
    entities=[offer],
    ttl=SPEC.offers.ttl,
    schema=fields(SPEC.offers),
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
