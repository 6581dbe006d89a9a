"""Real-time features: a push source and the stream feature view `customer_realtime`.

Written on the request path of `POST /events` (the service writes Feast's exact Redis layout
directly; a test proves it equal to `FeatureStore.push`). Not model inputs: the models are
trained offline on the batch views; these feed policy (eligibility, boosts, triggers) and the
decision log. Timestamps are epoch seconds (Int64, 0 = never); windowed counts are evaluated
at the row's time (the latest event applied), so readers compare `last_*_ts` with their clock.

The push source needs a batch (offline) source: an empty Parquet file with the view's
schema, created here on first `feast apply` when missing (materialization reads no rows).
"""

import os
import warnings

import pyarrow as pa
import pyarrow.parquet as pq
from entities import customer
from feast import FileSource, PushSource
from feast.stream_feature_view import StreamFeatureView
from features import fields
from sources import DATA_DIR

from contracts.features import REALTIME

# Feast marks stream feature views "alpha" with a warning at every load; we use only the push
# source and the view's online rows, both stable, so the warning is noise here.
warnings.filterwarnings("ignore", message="Stream feature views are experimental")

_PATH = os.path.abspath(os.path.join(DATA_DIR, "customer_realtime.parquet"))


def _ensure_batch_file(path: str) -> str:
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        schema = pa.schema(
            [
                ("customer_id", pa.string()),
                ("event_timestamp", pa.timestamp("us", tz="UTC")),
                *[
                    (f.name, pa.float32() if f.dtype == "float32" else pa.int64())
                    for f in REALTIME.features
                ],
            ]
        )
        pq.write_table(schema.empty_table(), path)
    return path


realtime_batch_source = FileSource(
    name="customer_realtime_batch",
    path=_ensure_batch_file(_PATH),
    timestamp_field="event_timestamp",
    description="Offline side of the real-time push source (empty: events live online).",
)

customer_events_push = PushSource(
    name="customer_events_push",
    batch_source=realtime_batch_source,
    description="Real-time features computed by the service from behavioural events.",
)

customer_realtime = StreamFeatureView(
    name=REALTIME.name,
    entities=[customer],
    ttl=REALTIME.ttl,
    schema=fields(REALTIME),
    source=customer_events_push,
    online=True,
    tags={"owner": "decisioning", "group": "realtime"},
)
