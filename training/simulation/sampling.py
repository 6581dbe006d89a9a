"""Who the simulator decides for, and when: the sample, the decision times, the valid offers."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt
import pandas as pd

from training.datasets.world import World

__all__ = ["decision_time", "decision_times", "sample_customers", "valid_offers"]

I64 = npt.NDArray[np.int64]


def decision_time(world: World) -> datetime:
    return world.config.end_ts + timedelta(hours=9)


def decision_times(world: World, n: int, days: int = 1) -> list[datetime]:
    """``now`` of each of ``n`` decisions: customer ``i`` is decided on day ``i % days``."""
    at = decision_time(world)
    return [at + timedelta(days=i % max(days, 1)) for i in range(n)]


def sample_customers(world: World, n: int, seed: int = 0) -> I64:
    """``n`` identified customers (not anonymous), seeded, in index order."""
    pool = np.flatnonzero(~world.anonymous)
    n = min(n, len(pool))
    out: I64 = np.sort(np.random.default_rng(seed).choice(pool, n, replace=False))
    return out


def valid_offers(world: World, at: datetime) -> I64:
    o = world.offers
    ts = pd.Timestamp(at)
    ok = (pd.to_datetime(o["valid_from"], utc=True) <= ts) & (
        pd.to_datetime(o["valid_to"], utc=True) >= ts
    )
    return np.flatnonzero(ok.to_numpy()).astype(np.int64)
