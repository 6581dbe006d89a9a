"""Actions scored with the world's truth: expected conversion, revenue and margin."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from training.datasets.world import CHANNELS, World

__all__ = [
    "Response",
    "Scores",
    "allowed_channels",
    "offer_margins",
    "score_actions",
    "score_responses",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Response = dict[str, Any] | None


def allowed_channels(world: World, cust: I64) -> npt.NDArray[np.bool_]:
    out: npt.NDArray[np.bool_] = world.consent[cust] & ~world.opted_out[cust][:, None]
    return out


def offer_margins(world: World) -> F64:
    out: F64 = world.offers["margin"].to_numpy(dtype=np.float64)
    return out


@dataclass(frozen=True)
class Scores:
    """Expected conversion, revenue and margin of one action per customer."""

    conversion: F64
    revenue: F64
    margin: F64

    def take(self, mask: npt.NDArray[np.bool_]) -> Scores:
        return Scores(self.conversion[mask], self.revenue[mask], self.margin[mask])


def score_actions(world: World, cust: I64, offer: I64, channel: I64, hour: F64) -> Scores:
    """Expected conversion / revenue / margin; entries with offer < 0 (no action) score 0."""
    act = offer >= 0
    conv = np.zeros(len(cust))
    rev = np.zeros(len(cust))
    mar = np.zeros(len(cust))
    if act.any():
        c, o, ch, h = cust[act], offer[act], channel[act], hour[act]
        conv[act] = world.expected_conversion(c, o, ch, h)
        rev[act] = world.expected_revenue(c, o, ch, h)
        mar[act] = rev[act] * offer_margins(world)[o]
    return Scores(conv, rev, mar)


def score_responses(world: World, cust: I64, responses: Sequence[Response]) -> pd.DataFrame:
    """One row per customer: decision id, arm, holdout, ok, offer/channel/hour, true scores."""
    off_index = {o: i for i, o in enumerate(world.offers["offer_id"])}
    ch_index = {c: i for i, c in enumerate(CHANNELS)}
    n = len(cust)
    offer = np.full(n, -1, dtype=np.int64)
    channel = np.zeros(n, dtype=np.int64)
    hour = np.zeros(n)
    arm = np.full(n, "error", dtype=object)
    decision_id = np.full(n, None, dtype=object)
    holdout = np.zeros(n, dtype=bool)
    ok = np.zeros(n, dtype=bool)
    degraded = np.zeros(n, dtype=bool)
    send_at = np.full(n, None, dtype=object)
    for i, r in enumerate(responses):
        if r is None:
            continue
        ok[i] = True
        degraded[i] = bool(r.get("degraded"))
        arm[i] = str(r.get("arm"))
        decision_id[i] = r.get("decision_id")
        holdout[i] = bool(r.get("holdout"))
        a = r.get("action")
        if a and a.get("offer_id") in off_index and a.get("channel") in ch_index:
            offer[i] = off_index[a["offer_id"]]
            channel[i] = ch_index[a["channel"]]
            at = datetime.fromisoformat(a["send_at"])
            hour[i] = float(at.hour)
            send_at[i] = at
    sc = score_actions(world, cust, offer, channel, hour)
    return pd.DataFrame(
        {
            "customer_id": world.customer_ids[cust],
            "decision_id": decision_id,
            "ok": ok,
            "arm": arm,
            "holdout": holdout,
            "degraded": degraded,
            "offer": offer,
            "channel": channel,
            "local_hour": hour,
            "send_at": send_at,
            "conversion": sc.conversion,
            "revenue": sc.revenue,
            "margin": sc.margin,
        }
    )
