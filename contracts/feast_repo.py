"""How every part opens the Feast repository: its location, config files and Redis URL format.

The offline tools (``training``) and the service's SDK feature read
(``NEXTBEST_FEATURE_SOURCE=feast``) open the same repository the same way: the
``feature_store*.yaml`` for the online store in use, with the registry and the SQLite store
redirected under ``NEXTBEST_VAR_DIR`` (so tests can isolate them). Feast is imported only
when a store is opened.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from contracts.features import FeatureSpec
from contracts.settings import ROOT, Settings

__all__ = [
    "FEAST_VERSION",
    "FEATURE_REPO",
    "feature_store",
    "redis_url_to_feast",
    "repo_config",
    "scoped_env",
]

FEATURE_REPO = ROOT / "feature_repo"
#: the Feast minor version whose Redis layout the service reads and writes directly
FEAST_VERSION = "0.67"
#: a customer id no real customer has: ``feature-store`` writes known values for it through
#: the Feast SDK, and the service reads them back through its own decoder of Feast's Redis
#: layout at start-up; a difference means the layout changed under it (a Feast upgrade)
CANARY_ENTITY = "__nextbest_layout_canary__"
CANARY_TIME = 1_577_836_800.0  # 2020-01-01T00:00:00Z


def canary_values(spec: FeatureSpec) -> dict[str, dict[str, float]]:
    """view -> feature -> the canary's value (exact in float32; opted out, so never marketed)."""
    out: dict[str, dict[str, float]] = {}
    for view in spec.customer_views:
        row: dict[str, float] = {}
        for i, f in enumerate(view.features):
            row[f.name] = float(i + 2) if f.dtype == "int64" else (i + 1) * 0.25
        out[view.name] = row
    out[spec.profile.name]["opted_out"] = 1.0
    return out


@contextlib.contextmanager
def scoped_env(**values: str) -> Iterator[None]:
    """Set environment variables for the duration of the block (Feast reads some)."""
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


def redis_url_to_feast(url: str, cluster: bool = False) -> str:
    """Turn ``redis://[:password@]host:port/db`` (or ``rediss://``) into Feast's format.

    For a cluster the URL names one node (the client discovers the others) and carries no
    ``db``: redis-py's cluster client refuses the argument, and a cluster has only db 0.
    """
    u = urlparse(url)
    parts = [f"{u.hostname or '127.0.0.1'}:{u.port or 6379}"]
    db = (u.path or "/0").lstrip("/") or "0"
    if cluster:
        if int(db) != 0:
            raise ValueError(f"a Redis Cluster has only database 0, not {db} ({url})")
    else:
        parts.append(f"db={int(db)}")
    if u.password:
        parts.append(f"password={u.password}")
    if u.username and u.username != "default":
        parts.append(f"username={u.username}")
    if u.scheme == "rediss":
        parts.append("ssl=true")
        q = parse_qs(u.query)
        if q.get("ssl_cert_reqs"):
            parts.append(f"ssl_cert_reqs={q['ssl_cert_reqs'][0]}")
    return ",".join(parts)


def _yaml(online: str, cluster: bool) -> Path:
    if online == "sqlite":
        return FEATURE_REPO / "feature_store.yaml"
    if online == "redis":
        name = "redis_cluster" if cluster else "redis"
        return FEATURE_REPO / f"feature_store.{name}.yaml"
    raise ValueError(f"unknown online store {online!r}: use 'sqlite' or 'redis'")


def repo_config(
    online: str | None = None, url: str | None = None, settings: Settings | None = None
) -> Any:
    """The repository's ``RepoConfig`` for ``online`` (default: NEXTBEST_ONLINE_STORE).

    Registry and SQLite paths are redirected into NEXTBEST_VAR_DIR; with
    NEXTBEST_REDIS_CLUSTER=1 the Redis store is ``feature_store.redis_cluster.yaml``.
    """
    from feast.repo_config import RepoConfig, load_repo_config

    s = settings or Settings.from_env()
    online = online or s.features.online_store
    conn = os.environ.get("REDIS_CONNECTION_STRING") or redis_url_to_feast(
        url or s.redis.url, cluster=s.redis.cluster
    )
    with scoped_env(REDIS_CONNECTION_STRING=conn):
        cfg = load_repo_config(FEATURE_REPO, _yaml(online, s.redis.cluster))
    feast_dir = s.paths.feast
    feast_dir.mkdir(parents=True, exist_ok=True)
    data = cfg.model_dump(by_alias=True, exclude_unset=True) if hasattr(cfg, "model_dump") else {}
    data["registry"] = str(feast_dir / "registry.db")
    if online == "sqlite":
        data["online_store"] = {"type": "sqlite", "path": str(feast_dir / "online.db")}
    data["repo_path"] = FEATURE_REPO
    return RepoConfig(**data)


def feature_store(
    online: str | None = None, url: str | None = None, settings: Settings | None = None
) -> Any:
    """A ``feast.FeatureStore`` on the repository (see :func:`repo_config`)."""
    from feast import FeatureStore

    s = settings or Settings.from_env()
    with scoped_env(NEXTBEST_DATA_DIR=str(s.paths.data_dir)):
        return FeatureStore(config=repo_config(online, url, s), repo_path=str(FEATURE_REPO))
