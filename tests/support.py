"""Helpers shared by test modules (not fixtures)."""

from __future__ import annotations

from contracts.settings import Settings

__all__ = ["make_settings"]


def make_settings(**env: object) -> Settings:
    """Settings exactly as the service reads them, from the given NEXTBEST_* variables only
    (``make_settings(NEXTBEST_REDIS_URL=url, NEXTBEST_DEV_MODE=1)``); everything else takes
    its default, whatever the test process's environment holds."""
    return Settings.from_env({k: "" if v is None else str(v) for k, v in env.items()})
