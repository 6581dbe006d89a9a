"""Every setting of nextbest, from environment variables, in this one place.

Settings are grouped by concern (:class:`Settings` has one struct per group). Each variable
is declared once in :data:`VARIABLES` (name, default, meaning); :meth:`Settings.from_env`
reads them, ``python -m service --check-config`` prints the values in effect, and the
configuration page of the docs and ``.env.example`` list the same table
(:func:`markdown_table`). Tests build settings the way production does:
``Settings.from_env({"NEXTBEST_REDIS_URL": ..., ...})``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec

__all__ = [
    "ROOT",
    "VARIABLES",
    "FeatureSettings",
    "LogSettings",
    "ModelSettings",
    "PathSettings",
    "PolicySettings",
    "RedisSettings",
    "SecuritySettings",
    "ServerSettings",
    "Settings",
    "SettingsError",
    "Variable",
    "markdown_table",
]

#: the repository (or installed tree) root: default home of models/, var/, feature_repo/
ROOT = Path(__file__).resolve().parent.parent


class SettingsError(ValueError):
    """A variable holds a value that cannot be used; the message names the variable."""


class _Group(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class ServerSettings(_Group, frozen=True, kw_only=True, forbid_unknown_fields=True):
    host: str
    port: int
    workers: int
    log_level: str
    max_body_bytes: int
    cors_origins: str
    otel: bool


class RedisSettings(_Group, frozen=True, kw_only=True, forbid_unknown_fields=True):
    url: str
    cluster: bool
    timeout_ms: float
    log_maxlen: int
    feedback_window_days: float
    log_backlog_max: int


class FeatureSettings(_Group, frozen=True, kw_only=True, forbid_unknown_fields=True):
    source: Literal["redis", "feast"]
    timeout_ms: float
    online_store: Literal["sqlite", "redis"]
    feast_project: str


class ModelSettings(_Group, frozen=True, kw_only=True, forbid_unknown_fields=True):
    models_dir: Path
    mlflow_tracking_uri: str | None
    alias: str
    poll_s: float


class PolicySettings(_Group, frozen=True, kw_only=True, forbid_unknown_fields=True):
    policy_file: Path
    sequences_file: Path
    scheduler_poll_s: float


class SecuritySettings(_Group, frozen=True, kw_only=True, forbid_unknown_fields=True):
    api_keys: str
    api_keys_file: str | None
    admin_keys: str
    admin_keys_file: str | None
    dev_mode: bool
    rate_limit_per_s: float
    rate_limit_burst: float | None
    rate_limit_store: Literal["redis", "local"]
    auth_failures_per_min: float


class LogSettings(_Group, frozen=True, kw_only=True, forbid_unknown_fields=True):
    url: str
    flush_s: float
    max_rows: int
    consumer: str
    metrics_port: int


class PathSettings(_Group, frozen=True, kw_only=True, forbid_unknown_fields=True):
    var_dir: Path
    data_dir: Path
    spool_dir: Path
    mlflow_artifact_root: str | None

    @property
    def feast(self) -> Path:
        return self.var_dir / "feast"

    @property
    def mlflow(self) -> Path:
        return self.var_dir / "mlflow"


class Settings(_Group, frozen=True, kw_only=True, forbid_unknown_fields=True):
    server: ServerSettings
    redis: RedisSettings
    features: FeatureSettings
    models: ModelSettings
    policy: PolicySettings
    security: SecuritySettings
    paths: PathSettings
    log: LogSettings

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``environ`` (default ``os.environ``); unset variables take defaults.

        Raises :class:`SettingsError` naming the variable when a value is not usable.
        """
        env = os.environ if environ is None else environ
        groups: dict[str, dict[str, Any]] = {}
        values: dict[str, str] = {}
        for v in VARIABLES:
            raw = env.get(v.name)
            if raw is None or (raw == "" and v.empty_is_unset):
                raw = v.default(values) if callable(v.default) else v.default
            values[v.name] = raw
            try:
                value = v.parse(raw)
            except (ValueError, TypeError) as exc:
                raise SettingsError(f"{v.name}={raw!r}: {exc}") from exc
            groups.setdefault(v.group, {})[v.field] = value
        try:
            return msgspec.convert(groups, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise SettingsError(str(exc)) from exc

    def describe(self) -> dict[str, dict[str, Any]]:
        """group -> field -> value, with secrets masked (for --check-config and logs)."""
        out: dict[str, dict[str, Any]] = {}
        for v in VARIABLES:
            value = getattr(getattr(self, v.group), v.field)
            if v.secret and value:
                value = "***"
            out.setdefault(v.group, {})[v.field] = str(value) if isinstance(value, Path) else value
        return out


def _bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected 1/0, true/false, yes/no")


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return raw

    return parse


def _non_negative_int(raw: str) -> int:
    n = int(raw)
    if n < 0:
        raise ValueError("must be >= 0")
    return n


def _positive(raw: str) -> float:
    x = float(raw)
    if not x > 0:
        raise ValueError("must be > 0")
    return x


def _positive_int(raw: str) -> int:
    n = int(raw)
    if n < 1:
        raise ValueError("must be at least 1")
    return n


def _non_negative(raw: str) -> float:
    x = float(raw)
    if not x >= 0:
        raise ValueError("must be >= 0")
    return x


def _optional(raw: str) -> str | None:
    return raw or None


def _optional_float(raw: str) -> float | None:
    return _non_negative(raw) if raw else None


@dataclass(frozen=True)
class Variable:
    """One environment variable: where it lands, its default and what it means."""

    name: str
    group: str
    field: str
    default: str | Callable[[Mapping[str, str]], str]
    parse: Callable[[str], Any]
    doc: str
    secret: bool = False
    empty_is_unset: bool = False

    @property
    def default_text(self) -> str:
        if callable(self.default):
            return (self.default.__doc__ or "").strip()
        return self.default or "unset"


def _var_default(values: Mapping[str, str]) -> str:
    """$NEXTBEST_VAR_DIR/world"""
    return str(Path(values["NEXTBEST_VAR_DIR"]) / "world")


def _log_default(values: Mapping[str, str]) -> str:
    """$NEXTBEST_VAR_DIR/log"""
    return str(Path(values["NEXTBEST_VAR_DIR"]) / "log")


def _spool_default(values: Mapping[str, str]) -> str:
    """$NEXTBEST_VAR_DIR/spool"""
    return str(Path(values["NEXTBEST_VAR_DIR"]) / "spool")


V = Variable
#: every variable, in the order of the configuration table
VARIABLES: tuple[Variable, ...] = (
    # server
    V("NEXTBEST_HOST", "server", "host", "127.0.0.1", str, "bind address"),
    V("NEXTBEST_PORT", "server", "port", "8000", int, "port"),
    V("NEXTBEST_WORKERS", "server", "workers", "1", _positive_int, "server worker processes"),
    V("NEXTBEST_LOG_LEVEL", "server", "log_level", "INFO",
      _choice("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
      "log level (JSON logs on stderr, no personal data)"),
    V("NEXTBEST_MAX_BODY_BYTES", "server", "max_body_bytes", "1048576", _positive_int,
      "request body limit (413 above it)"),
    V("NEXTBEST_CORS_ORIGINS", "server", "cors_origins", "", str,
      "comma-separated allowed origins; CORS is off when unset"),
    V("NEXTBEST_OTEL", "server", "otel", "0", _bool,
      "`1`: OpenTelemetry tracing of every request (needs the `otel` extra; exporter from the "
      "standard OTEL_* variables, e.g. OTEL_EXPORTER_OTLP_ENDPOINT); off: nothing is loaded"),
    # redis
    V("NEXTBEST_REDIS_URL", "redis", "url", "redis://127.0.0.1:6379/0", str,
      "Redis: online features (Feast layout), contacts, decision log (`rediss://` for TLS)",
      secret=False),
    V("NEXTBEST_REDIS_CLUSTER", "redis", "cluster", "0", _bool,
      "`1`: NEXTBEST_REDIS_URL names a node of a Redis Cluster"),
    V("NEXTBEST_REDIS_TIMEOUT_MS", "redis", "timeout_ms", "25", _non_negative,
      "budget of each Redis call before the fallback decision"),
    V("NEXTBEST_LOG_MAXLEN", "redis", "log_maxlen", "10000000", _positive_int,
      "approximate bound of the decision/feedback streams (a last resort: the log exporter "
      "drains and trims them; an entry trimmed by this bound before export is lost)"),
    V("NEXTBEST_FEEDBACK_WINDOW_DAYS", "redis", "feedback_window_days", "7", _positive,
      "how long feedback is accepted for a decision: the TTL of its compact marker and of "
      "the feedback and outcome-effect idempotency markers in Redis"),
    V("NEXTBEST_LOG_BACKLOG_MAX", "redis", "log_backlog_max", "2000000", _non_negative_int,
      "decision/feedback stream entries not yet exported above which /ready reports the "
      "backlog (503) and the exporter's alert fires (0 = no check)"),
    # features
    V("NEXTBEST_FEATURE_SOURCE", "features", "source", "redis", _choice("redis", "feast"),
      "`redis` (direct Feast layout read) or `feast` (Feast SDK, any online store)"),
    V("NEXTBEST_FEATURE_TIMEOUT_MS", "features", "timeout_ms", "100", _non_negative,
      "budget of the Feast SDK read when NEXTBEST_FEATURE_SOURCE=feast"),
    V("NEXTBEST_ONLINE_STORE", "features", "online_store", "sqlite", _choice("sqlite", "redis"),
      "online store of the offline tools, and of the service's SDK read "
      "(NEXTBEST_FEATURE_SOURCE=feast): the repository's feature_store*.yaml"),
    V("NEXTBEST_FEAST_PROJECT", "features", "feast_project", "nextbest", str,
      "Feast project name (part of the Redis key)"),
    # models
    V("NEXTBEST_MODELS_DIR", "models", "models_dir", str(ROOT / "models"), Path,
      "model bundle, used when MLFLOW_TRACKING_URI is unset"),
    V("MLFLOW_TRACKING_URI", "models", "mlflow_tracking_uri", "", _optional,
      "MLflow tracking/registry; the service loads `models:/<name>@$NEXTBEST_MODEL_ALIAS` "
      "when set (the offline tools default to sqlite:///$NEXTBEST_VAR_DIR/mlflow/mlflow.db)"),
    V("NEXTBEST_MODEL_ALIAS", "models", "alias", "champion", str, "registry alias to serve"),
    V("NEXTBEST_MODEL_POLL_S", "models", "poll_s", "30", _non_negative,
      "how often to check the alias / bundle for a new model set (0 = never)"),
    # policy
    V("NEXTBEST_POLICY_FILE", "policy", "policy_file",
      str(ROOT / "service" / "config" / "policy.yaml"), Path,
      "eligibility, caps, quiet hours, experiments"),
    V("NEXTBEST_SEQUENCES_FILE", "policy", "sequences_file",
      str(ROOT / "service" / "config" / "sequences.yaml"), Path,
      "triggered sequences (abandoned cart, ...)"),
    V("NEXTBEST_SCHEDULER_POLL_S", "policy", "scheduler_poll_s", "1", _non_negative,
      "how often the in-process scheduler looks for due sequence steps (0 = off)"),
    # security
    V("NEXTBEST_API_KEYS", "security", "api_keys", "", str,
      "API keys for /decide, /decide/batch, /feedback, /events: comma-separated, plain or "
      "`sha256:<hex>`", secret=True),
    V("NEXTBEST_API_KEYS_FILE", "security", "api_keys_file", "", _optional,
      "file with one key (or `sha256:<hex>`) per line"),
    V("NEXTBEST_ADMIN_KEYS", "security", "admin_keys", "", str,
      "keys for /admin routes (same formats)", secret=True),
    V("NEXTBEST_ADMIN_KEYS_FILE", "security", "admin_keys_file", "", _optional,
      "file with admin keys, one per line"),
    V("NEXTBEST_DEV_MODE", "security", "dev_mode", "0", _bool,
      "`1` allows starting with no key configured (development only)"),
    V("NEXTBEST_RATE_LIMIT_PER_S", "security", "rate_limit_per_s", "0", _non_negative,
      "per-key request rate (token bucket; 0 = unlimited)"),
    V("NEXTBEST_RATE_LIMIT_BURST", "security", "rate_limit_burst", "", _optional_float,
      "per-key burst (default: 2 x the rate)"),
    V("NEXTBEST_RATE_LIMIT_STORE", "security", "rate_limit_store", "redis",
      _choice("redis", "local"),
      "where the token buckets live: `redis` (one budget per key across every worker and "
      "replica; a bucket is local while Redis is unreachable) or `local` (per process)"),
    V("NEXTBEST_AUTH_FAILURES_PER_MIN", "security", "auth_failures_per_min", "20",
      _non_negative,
      "failed authentications a client address may make per minute (and in a burst) before "
      "it gets 429 on every request until the budget refills (0 = unlimited)"),
    # paths
    V("NEXTBEST_VAR_DIR", "paths", "var_dir", str(ROOT / "var"),
      lambda raw: Path(raw).resolve(),
      "git-ignored folder for generated data, registries and stores"),
    V("NEXTBEST_DATA_DIR", "paths", "data_dir", _var_default, lambda raw: Path(raw).resolve(),
      "input tables of the feature repository and training", empty_is_unset=True),
    V("NEXTBEST_SPOOL_DIR", "paths", "spool_dir", _spool_default, Path,
      "local append-only spool for log writes while Redis is down", empty_is_unset=True),
    # decision log (the exporter: python -m service.exporter)
    V("NEXTBEST_LOG_URL", "log", "url", _log_default, str,
      "where the exporter writes the Parquet decision log and the offline tools read it: a "
      "folder, or any fsspec URL (`s3://bucket/nextbest/log`, `gs://...`, `memory://...`)",
      empty_is_unset=True),
    V("NEXTBEST_EXPORTER_FLUSH_S", "log", "flush_s", "10", _positive,
      "the exporter writes a file per partition at least this often (while entries wait)"),
    V("NEXTBEST_EXPORTER_MAX_ROWS", "log", "max_rows", "50000", _positive_int,
      "... or as soon as this many entries wait"),
    V("NEXTBEST_EXPORTER_CONSUMER", "log", "consumer", "exporter", str,
      "the exporter's consumer name in the streams' group: keep it stable across restarts "
      "(its pending entries are re-read at start); run one exporter per Redis"),
    V("NEXTBEST_EXPORTER_METRICS_PORT", "log", "metrics_port", "9108", int,
      "the exporter's Prometheus port (0 = none)"),
    V("NEXTBEST_MLFLOW_ARTIFACT_ROOT", "paths", "mlflow_artifact_root", "", _optional,
      "artifact root of the `nextbest` experiment when it is created (default: the "
      "server's, or $NEXTBEST_VAR_DIR/mlflow/artifacts for a local store)"),
)  # fmt: skip


def markdown_table() -> str:
    """The configuration table (docs, ``--check-config --markdown``)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for v in VARIABLES:
        default = v.default_text.replace(str(ROOT), ".")
        rows.append(f"| `{v.name}` | `{default}` | {v.doc} |")
    return "\n".join(rows)
