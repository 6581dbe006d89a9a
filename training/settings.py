"""Paths and connection settings of the offline tools, read from the environment.

Every variable is declared once, in :mod:`contracts.settings` (the configuration table is
there and in the docs); this module gives the offline tools the few values they use, read
afresh at each call (tests point ``NEXTBEST_VAR_DIR`` elsewhere between runs).
"""

from __future__ import annotations

from contracts.feast_repo import FEATURE_REPO, redis_url_to_feast
from contracts.settings import ROOT, PathSettings, Settings

__all__ = [
    "FEATURE_REPO",
    "MODELS_DIR",
    "ROOT",
    "paths",
    "redis_cluster",
    "redis_url",
    "redis_url_to_feast",
    "settings",
]

MODELS_DIR = ROOT / "models"


def settings() -> Settings:
    return Settings.from_env()


def paths() -> PathSettings:
    """var_dir, data_dir (and ``.feast``, ``.mlflow``) in effect now."""
    return settings().paths


def redis_url() -> str:
    return settings().redis.url


def redis_cluster() -> bool:
    return settings().redis.cluster
