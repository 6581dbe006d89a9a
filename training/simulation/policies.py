"""Reference policies every decision is also scored under, and the oracle they are measured by.

The oracle and the random policy obey the service's quiet hours (:func:`quiet_mask`).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from training.datasets.world import CHANNELS, World
from training.simulation.sampling import valid_offers
from training.simulation.scoring import Scores, allowed_channels, offer_margins, score_actions

__all__ = ["most_popular_offer", "quiet_mask", "reference_policies", "restricted_oracle"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


def quiet_mask(policy: Any | None = None) -> npt.NDArray[np.bool_]:
    """(channel, local hour) -> True where the contact policy's quiet hours forbid a send.

    ``policy``: a ``PolicyConfig`` (default: the service's ``policy.yaml``).
    """
    from service.domain.config import load_policy
    from service.domain.contact import in_quiet_hours

    cp = (policy or load_policy()).contact_policy
    return np.array([[in_quiet_hours(cp, c, h) for h in range(24)] for c in CHANNELS])


def restricted_oracle(
    world: World,
    cust: I64,
    offers: I64,
    value: str = "revenue",
    quiet: npt.NDArray[np.bool_] | None = None,
) -> tuple[I64, I64, F64]:
    """World.oracle over ``offers``, consented channels and hours outside the quiet hours
    (``quiet``, see :func:`quiet_mask`; None: every hour): (offer, channel, hour) each.

    ``value``: ``revenue`` (price) or ``margin`` (price x margin). Expected value factorises
    as f(channel, hour) x g(offer), so the best offer does not depend on channel and hour;
    -1 where no consented channel exists.
    """
    n = len(cust)
    weight = world.offers["price"].to_numpy(dtype=np.float64)
    if value == "margin":
        weight = weight * offer_margins(world)
    g = np.column_stack(
        [world.p_convert_given_click(cust, np.full(n, o)) * weight[o] for o in offers]
    )
    best_offer = offers[g.argmax(axis=1)]
    allowed = allowed_channels(world, cust)
    best_val = np.zeros(n)
    best_ch = np.full(n, -1, dtype=np.int64)
    best_h = np.zeros(n)
    for ch in range(len(CHANNELS)):
        for h in range(24):
            if quiet is not None and quiet[ch, h]:
                continue
            v = world.expected_revenue(cust, best_offer, np.full(n, ch), np.full(n, float(h)))
            v = np.where(allowed[:, ch], v, 0.0)
            better = v > best_val
            best_val = np.where(better, v, best_val)
            best_ch = np.where(better, ch, best_ch)
            best_h = np.where(better, float(h), best_h)
    return np.where(best_ch >= 0, best_offer, -1), best_ch, best_h


def most_popular_offer(world: World, offers: I64, data_dir: Path | None) -> int:
    """The most purchased of ``offers`` in the world's events (the first one if unknown)."""
    path = data_dir / "raw" / "events.parquet" if data_dir else None
    if path is None or not path.exists():
        return int(offers[0])
    ev = pd.read_parquet(path, columns=["type", "offer_id"])
    vc = ev.loc[ev["type"] == "purchase", "offer_id"].value_counts()
    counts = {str(k): int(v) for k, v in vc.items()}
    ids = [str(x) for x in world.offers["offer_id"]]
    best = max(offers.tolist(), key=lambda o: counts.get(ids[o], 0))
    return int(best)


def reference_policies(
    world: World,
    cust: I64,
    at: datetime,
    seed: int = 0,
    data_dir: Path | None = None,
    quiet: npt.NDArray[np.bool_] | None = None,
) -> dict[str, Scores]:
    """policy -> expected scores per customer. ``quiet``: hours the oracle and the random
    policy may not use (the service's quiet hours, :func:`quiet_mask`)."""
    offers = valid_offers(world, at)
    n = len(cust)
    rng = np.random.default_rng(seed)
    out: dict[str, Scores] = {}
    for value in ("revenue", "margin"):
        o, ch, h = restricted_oracle(world, cust, offers, value, quiet)
        out[f"oracle ({value})"] = score_actions(world, cust, o, np.maximum(ch, 0), h)
    allowed = allowed_channels(world, cust)
    g = rng.gumbel(size=(n, len(CHANNELS))) + np.where(allowed, 0.0, -np.inf)
    rch = g.argmax(axis=1)
    ro = np.where(allowed.any(axis=1), offers[rng.integers(0, len(offers), n)], -1)
    ok_hours = ~quiet[rch] if quiet is not None else np.ones((n, 24), dtype=bool)
    gh = rng.gumbel(size=(n, 24)) + np.where(ok_hours, 0.0, -np.inf)
    out["random"] = score_actions(world, cust, ro, rch, gh.argmax(axis=1).astype(np.float64))
    pop = most_popular_offer(world, offers, data_dir)
    email = CHANNELS.index("email")
    po = np.where(allowed[:, email], pop, -1)
    out["popular by email at 10:00"] = score_actions(
        world, cust, po, np.full(n, email), np.full(n, 10.0)
    )
    zero = np.zeros(n)
    out["no message (holdout)"] = Scores(zero, zero, zero)
    return out
