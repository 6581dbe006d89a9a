"""Paths and connection settings shared by the offline tools, from the environment.

| variable | default | meaning |
|---|---|---|
| NEXTBEST_VAR_DIR | ./var | git-ignored folder for generated data, registries and stores |
| NEXTBEST_DATA_DIR | $NEXTBEST_VAR_DIR/world | Parquet input of the feature repository |
| NEXTBEST_ONLINE_STORE | sqlite | sqlite or redis |
| NEXTBEST_REDIS_URL | redis://127.0.0.1:6379/0 | Redis for the online store and the service |
| MLFLOW_TRACKING_URI | sqlite:///$NEXTBEST_VAR_DIR/mlflow/mlflow.db | MLflow tracking/registry |
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


def redis_url_to_feast(url: str) -> str:
    """Turn ``redis://[:password@]host:port/db`` (or ``rediss://``) into Feast's format."""
    u = urlparse(url)
    parts = [f"{u.hostname or '127.0.0.1'}:{u.port or 6379}"]
    db = (u.path or "/0").lstrip("/") or "0"
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
