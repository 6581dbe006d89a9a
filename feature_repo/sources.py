"""Batch sources: the feature-view tables `python -m training features` computes from the
ingested raw tables (``features/<view>.parquet`` of the data folder; see
contracts/tables.py), for the synthetic world and your own data alike.

The folder comes from NEXTBEST_DATA_DIR at `feast apply` time (default: ../var/world,
relative to this repository).
"""

import os

from feast import FileSource

DATA_DIR = os.environ.get("NEXTBEST_DATA_DIR", "../var/world")


def _parquet(name: str) -> str:
    return os.path.join(DATA_DIR, "features", f"{name}.parquet")


profile_source = FileSource(
    name="customer_profile_source",
    path=_parquet("customer_profile"),
    timestamp_field="event_timestamp",
    description="One row per customer and profile change (consent, time zone, lifecycle).",
)

behaviour_source = FileSource(
    name="customer_behaviour_source",
    path=_parquet("customer_behaviour"),
    timestamp_field="event_timestamp",
    description="Point-in-time snapshots of behavioural aggregates (RFM, cart, views).",
)

engagement_source = FileSource(
    name="customer_engagement_source",
    path=_parquet("customer_engagement"),
    timestamp_field="event_timestamp",
    description="Point-in-time snapshots of message engagement and activity hours.",
)

offer_source = FileSource(
    name="offer_catalogue_source",
    path=_parquet("offer_catalogue"),
    timestamp_field="event_timestamp",
    description="The offer catalogue (category, price, margin).",
)
