"""What happened after each decision: organic purchases, drawn outcomes, /feedback events.

Also the true expected reward of any action, the ground truth off-policy estimates on
simulated logs are checked against.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from training.datasets.world import CHANNELS, P_CLICK_GIVEN_OPEN, P_DELIVER, World
from training.simulation.scoring import score_actions

__all__ = [
    "ORGANIC_LOOKBACK_DAYS",
    "draw_outcomes",
    "expected_reward",
    "feedback_events",
    "organic_model",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


ORGANIC_LOOKBACK_DAYS = 28


def organic_model(
    world: World, data_dir: Path | None, attribution_days: float = 2.0
) -> tuple[F64, F64]:
    """(P(organic purchase in the window), its value) for every customer of the world.

    The rate is each customer's purchases without a message (purchase events minus
    converted messages) per day over the last 28 days of the history; the value is their
    mean purchase value (population mean for customers without purchases). Without the
    world's event files (or with ``attribution_days <= 0``) there are no organic purchases.
    """
    n = len(world.customer_ids)
    zero = np.zeros(n)
    raw = data_dir / "raw" if data_dir is not None else None
    if raw is None or attribution_days <= 0 or not (raw / "events.parquet").exists():
        return zero, zero
    end = pd.Timestamp(world.config.end_ts)
    since = end - pd.Timedelta(days=ORGANIC_LOOKBACK_DAYS)
    ev = pd.read_parquet(
        raw / "events.parquet", columns=["customer_id", "type", "timestamp", "value"]
    )
    buys = ev[(ev["type"] == "purchase") & ev["customer_id"].notna()]
    recent = buys[buys["timestamp"] >= since]
    idx = {c: i for i, c in enumerate(world.customer_ids.tolist())}
    count = np.zeros(n)
    for cid, k in recent["customer_id"].value_counts().items():
        count[idx[str(cid)]] += k
    msg_path = raw / "messages.parquet"
    if msg_path.exists():
        m = pd.read_parquet(msg_path, columns=["customer_id", "sent_at", "converted"])
        conv = m[m["converted"] & (pd.to_datetime(m["sent_at"], utc=True) >= since)]
        for cid, k in conv["customer_id"].value_counts().items():
            count[idx[str(cid)]] -= k
    rate = np.maximum(count, 0.0) / ORGANIC_LOOKBACK_DAYS
    p = 1.0 - np.exp(-attribution_days * rate)
    mean_value = buys.groupby("customer_id")["value"].mean()
    value = np.full(n, float(buys["value"].mean()) if len(buys) else 0.0)
    for cid, v in mean_value.items():
        value[idx[str(cid)]] = float(v)
    return p, value


def expected_reward(
    world: World,
    customer_ids: Sequence[str],
    offer_ids: Sequence[str | None],
    channels: Sequence[str | None],
    local_hours: Sequence[float] | F64,
    reward: str,
    organic: tuple[F64, F64],
) -> F64:
    """The true expected reward of actions (``None`` offer: no message) as the simulator's
    feedback reports it: ``converted`` (P(message or organic purchase)) or ``revenue``
    (expected message revenue + expected organic revenue). Ground truth for checking
    off-policy estimates on simulated logs."""
    cust = world.index_of(list(customer_ids))
    off_index = {o: i for i, o in enumerate(world.offers["offer_id"])}
    ch_index = {c: i for i, c in enumerate(CHANNELS)}
    offer = np.array([off_index.get(o, -1) if o else -1 for o in offer_ids], dtype=np.int64)
    channel = np.array([ch_index.get(c, 0) if c else 0 for c in channels], dtype=np.int64)
    sc = score_actions(world, cust, offer, channel, np.asarray(local_hours, dtype=np.float64))
    p_org, v_org = organic
    if reward == "converted":
        out: F64 = 1.0 - (1.0 - sc.conversion) * (1.0 - p_org[cust])
        return out
    if reward == "revenue":
        out = sc.revenue + p_org[cust] * v_org[cust]
        return out
    raise ValueError(f"reward must be converted or revenue, not {reward!r}")


def draw_outcomes(
    world: World,
    cust: I64,
    scored: pd.DataFrame,
    organic: tuple[F64, F64],
    seed: int = 0,
) -> pd.DataFrame:
    """Seeded draws of what happened after each decision (one row per scored decision).

    Columns: delivered, opened, clicked, converted (message or organic), message_converted,
    organic_converted, value (sum of the purchase values).
    """
    rng = np.random.default_rng(seed + 7919)
    n = len(cust)
    offer = scored["offer"].to_numpy(dtype=np.int64)
    ch = scored["channel"].to_numpy(dtype=np.int64)
    hour = scored["local_hour"].to_numpy(dtype=np.float64)
    act = (offer >= 0) & scored["ok"].to_numpy(dtype=bool)
    u = rng.random((n, 5))
    delivered = np.zeros(n, dtype=bool)
    opened = np.zeros(n, dtype=bool)
    clicked = np.zeros(n, dtype=bool)
    msg_conv = np.zeros(n, dtype=bool)
    if act.any():
        c, o, k, h = cust[act], offer[act], ch[act], hour[act]
        allowed = world.consent[c, k] & ~world.opted_out[c]
        d = allowed & (u[act, 0] < P_DELIVER[k])
        op = d & (u[act, 1] < world.p_open(c, k, h))
        cl = op & (u[act, 2] < P_CLICK_GIVEN_OPEN)
        cv = cl & (u[act, 3] < world.p_convert_given_click(c, o))
        delivered[act], opened[act], clicked[act], msg_conv[act] = d, op, cl, cv
    p_org, v_org = organic
    org = scored["ok"].to_numpy(dtype=bool) & (u[:, 4] < p_org[cust])
    price = world.offers["price"].to_numpy(dtype=np.float64)
    value = np.where(msg_conv, price[np.maximum(offer, 0)], 0.0) + np.where(org, v_org[cust], 0.0)
    return pd.DataFrame(
        {
            "decision_id": scored["decision_id"].to_numpy(),
            "delivered": delivered,
            "opened": opened,
            "clicked": clicked,
            "converted": msg_conv | org,
            "message_converted": msg_conv,
            "organic_converted": org,
            "value": np.round(value, 2),
        }
    )


def feedback_events(
    outcomes: pd.DataFrame, scored: pd.DataFrame, nows: Sequence[datetime]
) -> list[dict[str, Any]]:
    """The /feedback bodies for the drawn outcomes (timestamps after the send time)."""
    events: list[dict[str, Any]] = []
    rows = zip(outcomes.itertuples(index=False), scored["send_at"].tolist(), nows, strict=True)
    for o, send_at, now in rows:
        if o.decision_id is None:
            continue
        t = send_at if send_at is not None else now
        steps = (
            ("delivered", o.delivered, 1),
            ("opened", o.opened, 20),
            ("clicked", o.clicked, 25),
        )
        for event, happened, minutes in steps:
            if happened:
                ts = (t + timedelta(minutes=minutes)).isoformat()
                events.append({"decision_id": o.decision_id, "event": event, "timestamp": ts})
        if o.converted:
            ts = (t + timedelta(hours=3)).isoformat()
            events.append(
                {
                    "decision_id": o.decision_id,
                    "event": "converted",
                    "value": float(o.value),  # type: ignore[arg-type]
                    "timestamp": ts,
                }
            )
    return events
