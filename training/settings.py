"""Paths and connection settings shared by the offline tools, from the environment.

| variable | default | meaning |
|---|---|---|
| NEXTBEST_VAR_DIR | ./var | git-ignored folder for generated data, registries and stores |
| NEXTBEST_DATA_DIR | $NEXTBEST_VAR_DIR/world | Parquet input of the feature repository |
| NEXTBEST_ONLINE_STORE | sqlite | sqlite or redis |
| NEXTBEST_REDIS_URL | redis://127.0.0.1:6379/0 | Redis for the online store and the service |
| NEXTBEST_REDIS_CLUSTER | 0 | `1`: NEXTBEST_REDIS_URL names a node of a Redis Cluster (Feast `redis_cluster`) |
| MLFLOW_TRACKING_URI | sqlite:///$NEXTBEST_VAR_DIR/mlflow/mlflow.db | MLflow tracking/registry |
| NEXTBEST_MLFLOW_ARTIFACT_ROOT | see below | artifact root of the `nextbest` experiment when it is created |

The experiment's artifact root is fixed when the experiment is created: with a tracking *server*
(``http(s)://``) it is the server's (``mlflow-artifacts:/`` with ``--serve-artifacts``, so every
client up- and downloads through the server); with a local store (SQLite, a database URI, a
folder) it is ``$NEXTBEST_VAR_DIR/mlflow/artifacts``. NEXTBEST_MLFLOW_ARTIFACT_ROOT overrides
both (e.g. ``s3://bucket/nextbest`` when the trainer writes to the database directly).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlparse

ROOT = Path(__file__).resolve().parent.parent
FEATURE_REPO = ROOT / "feature_repo"
MODELS_DIR = ROOT / "models"


@dataclass(frozen=True)
class Paths:
    var: Path
    data: Path

    @property
    def feast(self) -> Path:
        return self.var / "feast"

    @property
    def mlflow(self) -> Path:
        return self.var / "mlflow"


def paths() -> Paths:
    var = Path(os.environ.get("NEXTBEST_VAR_DIR", ROOT / "var")).resolve()
    data = Path(os.environ.get("NEXTBEST_DATA_DIR", var / "world")).resolve()
    return Paths(var=var, data=data)


def redis_url() -> str:
    return os.environ.get("NEXTBEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_cluster() -> bool:
    return os.environ.get("NEXTBEST_REDIS_CLUSTER", "0").lower() in ("1", "true", "yes")


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
