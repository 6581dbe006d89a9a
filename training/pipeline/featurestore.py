"""Apply the Feast repository and materialize features into the online store."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from feast import FeatureStore
from feast.repo_config import RepoConfig, load_repo_config

from training.settings import FEATURE_REPO, paths, redis_cluster, redis_url, redis_url_to_feast

__all__ = ["apply", "clear_online", "feature_store", "materialize", "repo_config"]


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _yaml(online: str) -> Path:
    if online == "sqlite":
        return FEATURE_REPO / "feature_store.yaml"
    if online == "redis":
        name = "redis_cluster" if redis_cluster() else "redis"
        return FEATURE_REPO / f"feature_store.{name}.yaml"
    raise ValueError(f"unknown online store {online!r}: use 'sqlite' or 'redis'")


def repo_config(online: str | None = None, url: str | None = None) -> RepoConfig:
    """The repository's config for ``online`` (default: NEXTBEST_ONLINE_STORE or sqlite).

    Registry and SQLite paths are redirected into NEXTBEST_VAR_DIR so tests can isolate them.
    With NEXTBEST_REDIS_CLUSTER=1 the Redis store is ``feature_store.redis_cluster.yaml``.
    """
    online = online or os.environ.get("NEXTBEST_ONLINE_STORE", "sqlite")
    conn = os.environ.get("REDIS_CONNECTION_STRING") or redis_url_to_feast(
        url or redis_url(), cluster=redis_cluster()
    )
    with _env(REDIS_CONNECTION_STRING=conn):
        cfg = load_repo_config(FEATURE_REPO, _yaml(online))
    p = paths()
    p.feast.mkdir(parents=True, exist_ok=True)
    data = cfg.model_dump(by_alias=True, exclude_unset=True) if hasattr(cfg, "model_dump") else {}
    data["registry"] = str(p.feast / "registry.db")
    if online == "sqlite":
        data["online_store"] = {"type": "sqlite", "path": str(p.feast / "online.db")}
    data["repo_path"] = FEATURE_REPO
    return RepoConfig(**data)


def feature_store(online: str | None = None, url: str | None = None) -> FeatureStore:
    with _env(NEXTBEST_DATA_DIR=str(paths().data)):
        return FeatureStore(config=repo_config(online, url), repo_path=str(FEATURE_REPO))


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
    with _env(NEXTBEST_DATA_DIR=str(paths().data)), contextlib.chdir(FEATURE_REPO):
        apply_total(cfg, FEATURE_REPO, skip_source_validation=False)
    store = FeatureStore(config=cfg, repo_path=str(FEATURE_REPO))
    return sorted(fv.name for fv in store.list_feature_views())


def materialize(
    online: str | None = None, url: str | None = None, end: datetime | None = None
) -> FeatureStore:
    """Load the latest feature values (as of ``end``, default now) into the online store."""
    store = feature_store(online, url)
    end = end or datetime.now(UTC)
    store.materialize(
        start_date=datetime(2000, 1, 1, tzinfo=UTC), end_date=end + timedelta(seconds=1)
    )
    return store
