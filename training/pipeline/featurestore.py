"""Apply the Feast repository and materialize features into the online store."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

from feast import FeatureStore

from contracts.feast_repo import (
    CANARY_ENTITY,
    CANARY_TIME,
    FEATURE_REPO,
    canary_values,
    feature_store,
    repo_config,
    scoped_env,
)
from contracts.features import DEFAULT_SPEC, FeatureSpec
from training.settings import paths

__all__ = ["apply", "clear_online", "feature_store", "materialize", "repo_config"]


def clear_online(online: str | None = None, url: str | None = None) -> int:
    """Delete this project's rows from the online store; returns the views cleared.

    Materialization never overwrites a row with one that is not newer, so after the data
    changed (a regenerated world, a re-import) stale rows would survive; clear first. Only
    Feast's own rows go (the service's keys, ``nb:...``, stay). Nothing applied yet: 0.
    """
    from feast.infra.online_stores.helpers import get_online_store_from_config

    store = feature_store(online, url)
    try:
        views = [*store.list_feature_views(), *store.list_stream_feature_views()]
    except Exception:  # no registry yet: nothing was ever materialized
        return 0
    if not views:
        return 0
    get_online_store_from_config(store.config.online_store).teardown(store.config, views, [])
    return len(views)


def apply(online: str | None = None, url: str | None = None) -> list[str]:
    """`feast apply` on the repository; returns the names of the feature views."""
    import sys

    from feast.repo_operations import apply_total

    cfg = repo_config(online, url)
    if str(FEATURE_REPO) not in sys.path:
        sys.path.insert(0, str(FEATURE_REPO))
    with scoped_env(NEXTBEST_DATA_DIR=str(paths().data_dir)), contextlib.chdir(FEATURE_REPO):
        apply_total(cfg, FEATURE_REPO, skip_source_validation=False)
    store = FeatureStore(config=cfg, repo_path=str(FEATURE_REPO))
    return sorted(fv.name for fv in store.list_feature_views())


def materialize(
    online: str | None = None, url: str | None = None, end: datetime | None = None
) -> FeatureStore:
    """Load the latest feature values (as of ``end``, default now) into the online store."""
    store: FeatureStore = feature_store(online, url)
    end = end or datetime.now(UTC)
    store.materialize(
        start_date=datetime(2000, 1, 1, tzinfo=UTC), end_date=end + timedelta(seconds=1)
    )
    from training.pipeline.dataset import data_spec

    write_canary(store, data_spec())  # the feature names of the data's vocabulary
    return store


def write_canary(store: FeatureStore, spec: FeatureSpec = DEFAULT_SPEC) -> None:
    """Write the layout canary's known values through the Feast SDK (see
    :data:`contracts.feast_repo.CANARY_ENTITY`): the service checks them at start-up."""
    import pandas as pd

    ts = pd.Timestamp(CANARY_TIME, unit="s", tz="UTC")
    for view_name, row in canary_values(spec).items():
        view = spec.view(view_name)
        df = pd.DataFrame({"customer_id": [CANARY_ENTITY], "event_timestamp": [ts]})
        for f in view.features:
            df[f.name] = pd.Series([row[f.name]]).astype(
                "int64" if f.dtype == "int64" else "float32"
            )
        store.write_to_online_store(view_name, df)
