"""How old a customer's features may be: each feature view's TTL (pure, no I/O).

A view's row older than its TTL (``contracts.features.View.ttl``) at the decision's ``now``
is *stale*: its features are treated exactly like missing ones (NaN; the models were
trained with missing values), and the decision names the view in ``degraded``
(``features_stale:<view>``). When every view that has a row is stale, there are no features
at all (a cold start). A row dated after ``now`` (a decision replayed in the past) is fresh.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from contracts.features import View

__all__ = ["Fresh", "drop_stale"]

F64 = npt.NDArray[np.float64]


class Fresh:
    """What :func:`drop_stale` keeps: features, the newest fresh timestamp, stale views."""

    __slots__ = ("features", "newest", "stale")

    def __init__(
        self, features: dict[str, F64] | None, newest: float | None, stale: tuple[str, ...]
    ) -> None:
        self.features = features
        self.newest = newest
        self.stale = stale


def drop_stale(
    features: dict[str, F64] | None,
    stamps: Mapping[str, float],
    views: Sequence[View],
    now: float,
) -> Fresh:
    """``features`` without the views whose row is older than the view's TTL at ``now``."""
    if features is None:
        return Fresh(None, None, ())
    stale = tuple(
        v.name for v in views if v.name in stamps and now - stamps[v.name] > v.ttl.total_seconds()
    )
    fresh = [ts for view, ts in stamps.items() if view not in stale]
    if not stale:
        return Fresh(features, max(fresh) if fresh else None, ())
    if not fresh:
        return Fresh(None, None, stale)
    out = dict(features)
    for v in views:
        if v.name in stale:
            for name in v.names:
                if name in out:
                    out[name] = np.full(len(out[name]), np.nan)
    return Fresh(out, max(fresh), stale)
