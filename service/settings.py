"""Service settings: every one from an environment variable, in this one place.

| variable | default | meaning |
|---|---|---|
| NEXTBEST_HOST | 127.0.0.1 | bind address |
| NEXTBEST_PORT | 8000 | port |
| NEXTBEST_WORKERS | 1 | server worker processes |
| NEXTBEST_REDIS_URL | redis://127.0.0.1:6379/0 | Redis: online features (Feast layout), contacts, decision log |
| NEXTBEST_REDIS_CLUSTER | 0 | `1`: NEXTBEST_REDIS_URL names a node of a Redis Cluster |
| NEXTBEST_REDIS_TIMEOUT_MS | 25 | budget of each Redis call before the fallback decision |
| NEXTBEST_FEATURE_SOURCE | redis | `redis` (direct Feast layout read) or `feast` (Feast SDK, any online store) |
| NEXTBEST_FEATURE_TIMEOUT_MS | 100 | budget of the Feast SDK read when NEXTBEST_FEATURE_SOURCE=feast |
| NEXTBEST_ONLINE_STORE | sqlite | with NEXTBEST_FEATURE_SOURCE=feast: which online store the SDK reads (`sqlite` or `redis`; the repository's feature_store*.yaml) |
| NEXTBEST_FEAST_PROJECT | nextbest | Feast project name (part of the Redis key) |
| NEXTBEST_MODELS_DIR | ./models | model bundle, used when MLFLOW_TRACKING_URI is unset |
| MLFLOW_TRACKING_URI | unset | when set, models load from `models:/<name>@$NEXTBEST_MODEL_ALIAS` |
| NEXTBEST_MODEL_ALIAS | champion | registry alias to serve |
| NEXTBEST_POLICY_FILE | service/config/policy.yaml | eligibility, caps, quiet hours, experiments |
| NEXTBEST_MAX_BODY_BYTES | 1048576 | request body limit (413 above it) |
| NEXTBEST_LOG_MAXLEN | 10000000 | approximate bound of the decision/feedback streams |
| NEXTBEST_SPOOL_DIR | ./var/spool | local append-only spool for log writes while Redis is down |
| NEXTBEST_LOG_LEVEL | INFO | log level (JSON logs on stderr, no personal data) |
| NEXTBEST_API_KEYS | unset | API keys for /decide, /decide/batch, /feedback: comma-separated, plain or `sha256:<hex>` |
| NEXTBEST_API_KEYS_FILE | unset | file with one key (or `sha256:<hex>`) per line |
| NEXTBEST_ADMIN_KEYS | unset | keys for /admin routes (same formats); `NEXTBEST_ADMIN_KEYS_FILE` too |
| NEXTBEST_DEV_MODE | 0 | `1` allows starting with no key configured (development only) |
| NEXTBEST_RATE_LIMIT_PER_S | 0 | per-key request rate (token bucket; 0 = unlimited) |
| NEXTBEST_RATE_LIMIT_BURST | 2 x rate | per-key burst |
| NEXTBEST_CORS_ORIGINS | unset | comma-separated allowed origins; CORS is off when unset |
| NEXTBEST_MODEL_POLL_S | 30 | how often to check the alias / bundle for a new model set (0 = never) |
| NEXTBEST_SEQUENCES_FILE | service/config/sequences.yaml | triggered sequences (abandoned cart, ...) |
| NEXTBEST_SCHEDULER_POLL_S | 1 | how often the in-process scheduler looks for due sequence steps (0 = off) |
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import msgspec

__all__ = ["Settings"]

ROOT = Path(__file__).resolve().parent.parent


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _feature_source(value: str) -> Literal["redis", "feast"]:
    if value not in ("redis", "feast"):
        raise ValueError(f"NEXTBEST_FEATURE_SOURCE must be 'redis' or 'feast', not {value!r}")
    return "redis" if value == "redis" else "feast"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_cluster: bool = False
    redis_timeout_ms: float = 25.0
    feature_source: Literal["redis", "feast"] = "redis"
    feature_timeout_ms: float = 100.0
    feast_project: str = "nextbest"
    models_dir: Path = ROOT / "models"
    mlflow_tracking_uri: str | None = None
    model_alias: str = "champion"
    policy_file: Path = ROOT / "service" / "config" / "policy.yaml"
    max_body_bytes: int = 1_048_576
    log_maxlen: int = 10_000_000
    spool_dir: Path = ROOT / "var" / "spool"
    log_level: str = "INFO"
    api_keys: str = ""
    api_keys_file: str | None = None
    admin_keys: str = ""
    admin_keys_file: str | None = None
    dev_mode: bool = False
    rate_limit_per_s: float = 0.0
    rate_limit_burst: float | None = None
    cors_origins: str = ""
    model_poll_s: float = 30.0
    sequences_file: Path = ROOT / "service" / "config" / "sequences.yaml"
    scheduler_poll_s: float = 1.0

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            host=_env("NEXTBEST_HOST", "127.0.0.1"),
            port=int(_env("NEXTBEST_PORT", "8000")),
            workers=int(_env("NEXTBEST_WORKERS", "1")),
            redis_url=_env("NEXTBEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
            redis_cluster=_env("NEXTBEST_REDIS_CLUSTER", "0").lower() in ("1", "true", "yes"),
            redis_timeout_ms=float(_env("NEXTBEST_REDIS_TIMEOUT_MS", "25")),
            feature_source=_feature_source(_env("NEXTBEST_FEATURE_SOURCE", "redis")),
            feature_timeout_ms=float(_env("NEXTBEST_FEATURE_TIMEOUT_MS", "100")),
            feast_project=_env("NEXTBEST_FEAST_PROJECT", "nextbest"),
            models_dir=Path(_env("NEXTBEST_MODELS_DIR", str(ROOT / "models"))),
            mlflow_tracking_uri=os.environ.get("MLFLOW_TRACKING_URI") or None,
            model_alias=_env("NEXTBEST_MODEL_ALIAS", "champion"),
            policy_file=Path(
                _env("NEXTBEST_POLICY_FILE", str(ROOT / "service" / "config" / "policy.yaml"))
            ),
            max_body_bytes=int(_env("NEXTBEST_MAX_BODY_BYTES", "1048576")),
            log_maxlen=int(_env("NEXTBEST_LOG_MAXLEN", "10000000")),
            spool_dir=Path(_env("NEXTBEST_SPOOL_DIR", str(ROOT / "var" / "spool"))),
            log_level=_env("NEXTBEST_LOG_LEVEL", "INFO"),
            api_keys=_env("NEXTBEST_API_KEYS", ""),
            api_keys_file=os.environ.get("NEXTBEST_API_KEYS_FILE") or None,
            admin_keys=_env("NEXTBEST_ADMIN_KEYS", ""),
            admin_keys_file=os.environ.get("NEXTBEST_ADMIN_KEYS_FILE") or None,
            dev_mode=_env("NEXTBEST_DEV_MODE", "0").lower() in ("1", "true", "yes"),
            rate_limit_per_s=float(_env("NEXTBEST_RATE_LIMIT_PER_S", "0")),
            rate_limit_burst=(
                float(os.environ["NEXTBEST_RATE_LIMIT_BURST"])
                if os.environ.get("NEXTBEST_RATE_LIMIT_BURST")
                else None
            ),
            cors_origins=_env("NEXTBEST_CORS_ORIGINS", ""),
            model_poll_s=float(_env("NEXTBEST_MODEL_POLL_S", "30")),
            sequences_file=Path(
                _env("NEXTBEST_SEQUENCES_FILE", str(ROOT / "service" / "config" / "sequences.yaml"))
            ),
            scheduler_poll_s=float(_env("NEXTBEST_SCHEDULER_POLL_S", "1")),
        )
