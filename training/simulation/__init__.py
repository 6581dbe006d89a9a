"""Policy simulator: replay world customers through the running service, score with the truth.

`python -m training simulate --url http://127.0.0.1:8000 --api-key KEY --customers 20000`

Samples identified customers of the synthetic world (``World.load`` of NEXTBEST_DATA_DIR),
asks the service ``POST /decide`` for each (placement ``campaign``; ``now`` = the world's end
+ 9 h, plus ``day`` days: customer ``i`` of the sample is decided on day ``i % days``) with
bounded concurrency, and scores every returned action with the world's ground truth at the
action's offer, channel and local hour (the hour of ``send_at``, which carries the
customer's UTC offset). A decision without an action scores 0.

Every decision is also scored under reference policies, for the same customer:

| policy | what |
|---|---|
| oracle (revenue) / oracle (margin) | the best (valid offer, consented channel, local hour outside the quiet hours) by expected revenue / margin |
| random | a random valid offer on a random consented channel at a random hour outside the quiet hours |
| popular by email at 10:00 | the most purchased valid offer, by e-mail at 10:00 (0 without e-mail consent) |
| no message (holdout) | 0 incremental |

The oracle and the random policy obey the same quiet hours as the service (``policy.yaml``
or ``--policy``): a message at 3 a.m. is not an option the service has. Frequency caps do
not bind (each customer is decided once).

Figures are expected conversions, revenue and margin (revenue x the offer's margin) per
1,000 decisions, per arm of the service, with the references computed on the customers of
the same arm, and their ratio to the oracle. The comparison of the ``model`` arm against
each reference is paired (same customers): mean difference with a 95 % CLT interval.

**Outcomes and feedback** (unless ``--no-feedback``): for every decision the simulator draws
what happened and reports it with ``POST /feedback``, so the service's decision log can feed
the lift report, off-policy evaluation and retraining like a real deployment's would.
The message's funnel follows the world's truth: ``delivered`` ~ P_DELIVER[channel],
``opened`` ~ p_open(customer, channel, hour), ``clicked`` ~ 0.35, message conversion ~
p_convert_given_click(customer, offer) with value = the offer's price. Customers also buy
without any message: an *organic* purchase in the attribution window
(``--attribution-days``, default 2) has probability ``1 - exp(-days x r)``, where ``r`` is
the customer's purchase rate (non-message purchases per day) over the last 28 days of the
world's history, and its value is the customer's mean purchase value (the population mean
for customers without purchases). Organic purchases happen in every arm and in the
holdout alike, so they cancel in the lift; ``converted`` is reported when either happened,
with the sum of the values. The draws are seeded (``--seed``).

:func:`simulate_inprocess` runs the same scoring with any ``customer_id -> response`` callable
(no HTTP), for tests.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from training.datasets.world import CHANNELS, P_CLICK_GIVEN_OPEN, P_DELIVER, World

__all__ = [
    "SimResult",
    "decision_time",
    "decompose_gap",
    "draw_outcomes",
    "expected_reward",
    "feedback_events",
    "fetch_decisions",
    "organic_model",
    "post_feedback",
    "quiet_mask",
    "reference_policies",
    "sample_customers",
    "score_responses",
    "simulate_http",
    "simulate_inprocess",
    "valid_offers",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Response = dict[str, Any] | None
ORGANIC_LOOKBACK_DAYS = 28


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


def _allowed(world: World, cust: I64) -> npt.NDArray[np.bool_]:
    out: npt.NDArray[np.bool_] = world.consent[cust] & ~world.opted_out[cust][:, None]
    return out


def _margin(world: World) -> F64:
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


def _score(world: World, cust: I64, offer: I64, channel: I64, hour: F64) -> Scores:
    """Expected conversion / revenue / margin; entries with offer < 0 (no action) score 0."""
    act = offer >= 0
    conv = np.zeros(len(cust))
    rev = np.zeros(len(cust))
    mar = np.zeros(len(cust))
    if act.any():
        c, o, ch, h = cust[act], offer[act], channel[act], hour[act]
        conv[act] = world.expected_conversion(c, o, ch, h)
        rev[act] = world.expected_revenue(c, o, ch, h)
        mar[act] = rev[act] * _margin(world)[o]
    return Scores(conv, rev, mar)


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
        weight = weight * _margin(world)
    g = np.column_stack(
        [world.p_convert_given_click(cust, np.full(n, o)) * weight[o] for o in offers]
    )
    best_offer = offers[g.argmax(axis=1)]
    allowed = _allowed(world, cust)
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
    path = data_dir / "events.parquet" if data_dir else None
    if path is None or not path.exists():
        return int(offers[0])
    ev = pd.read_parquet(path, columns=["event_type", "offer_id"])
    vc = ev.loc[ev["event_type"] == "purchase", "offer_id"].value_counts()
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
        out[f"oracle ({value})"] = _score(world, cust, o, np.maximum(ch, 0), h)
    allowed = _allowed(world, cust)
    g = rng.gumbel(size=(n, len(CHANNELS))) + np.where(allowed, 0.0, -np.inf)
    rch = g.argmax(axis=1)
    ro = np.where(allowed.any(axis=1), offers[rng.integers(0, len(offers), n)], -1)
    ok_hours = ~quiet[rch] if quiet is not None else np.ones((n, 24), dtype=bool)
    gh = rng.gumbel(size=(n, 24)) + np.where(ok_hours, 0.0, -np.inf)
    out["random"] = _score(world, cust, ro, rch, gh.argmax(axis=1).astype(np.float64))
    pop = most_popular_offer(world, offers, data_dir)
    email = CHANNELS.index("email")
    po = np.where(allowed[:, email], pop, -1)
    out["popular by email at 10:00"] = _score(world, cust, po, np.full(n, email), np.full(n, 10.0))
    zero = np.zeros(n)
    out["no message (holdout)"] = Scores(zero, zero, zero)
    return out


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
    sc = _score(world, cust, offer, channel, hour)
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


# ------------------------------------------------------------------------------ outcomes


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
    if data_dir is None or attribution_days <= 0 or not (data_dir / "events.parquet").exists():
        return zero, zero
    end = pd.Timestamp(world.config.end_ts)
    since = end - pd.Timedelta(days=ORGANIC_LOOKBACK_DAYS)
    ev = pd.read_parquet(
        data_dir / "events.parquet",
        columns=["customer_id", "event_type", "event_timestamp", "value"],
    )
    buys = ev[(ev["event_type"] == "purchase") & ev["customer_id"].notna()]
    recent = buys[buys["event_timestamp"] >= since]
    idx = {c: i for i, c in enumerate(world.customer_ids.tolist())}
    count = np.zeros(n)
    for cid, k in recent["customer_id"].value_counts().items():
        count[idx[str(cid)]] += k
    msg_path = data_dir / "messages.parquet"
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
    sc = _score(world, cust, offer, channel, np.asarray(local_hours, dtype=np.float64))
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


# ------------------------------------------------------------------------------ summary


@dataclass
class SimResult:
    table: pd.DataFrame  # one row per (customers, policy): n, per-1k values, ratio to oracle
    paired: pd.DataFrame  # model arm minus each reference on the same customers, with CI
    per_customer: pd.DataFrame
    errors: int
    seconds: float
    feedback: dict[str, int] = field(default_factory=dict)
    headline: str = "model"
    gap: dict[str, float] = field(default_factory=dict)  # decompose_gap of the headline arm

    def render(self) -> str:
        t = self.table.copy()
        t["conversions / 1k"] = t["conversions / 1k"].map(lambda v: f"{v:,.2f}")
        for c in ("revenue / 1k", "margin / 1k"):
            t[c] = t[c].map(lambda v: f"{v:,.1f}")
        for c in ("conversions vs oracle", "revenue vs oracle", "margin vs oracle"):
            t[c] = t[c].map(lambda v: f"{v:.1%}" if v == v else "-")
        n_deg = int(self.per_customer["degraded"].sum()) if "degraded" in self.per_customer else 0
        head = (
            f"Policy simulation: {len(self.per_customer):,} customers, {self.errors} errors, "
            f"{n_deg} degraded, {self.seconds:.1f}s (expected values from the world's truth; "
            "each reference policy is scored on the customers of the arm above it)"
        )
        out = [head, t.to_string(index=False)]
        if not self.paired.empty:
            p = self.paired[["reference", "n"]].copy()
            for c, f in (("conversions / 1k", "{:+,.2f}"), ("revenue / 1k", "{:+,.1f}"),
                         ("margin / 1k", "{:+,.1f}")):  # fmt: skip
                lo_hi = self.paired[f"{c} CI"]
                p[f"{c} [95% CI]"] = [
                    f"{f.format(v)} [{f.format(lo)}, {f.format(hi)}]"
                    for v, (lo, hi) in zip(self.paired[c], lo_hi, strict=True)
                ]
            out += [
                "",
                f"{self.headline} arm minus reference, same customers (95% CI, CLT):",
                p.to_string(index=False),
            ]
        if self.gap:
            out += ["", f"where the {self.headline} arm loses margin (share of the margin oracle):"]
            out += [f"  {k:<42} {v:.1%}" for k, v in self.gap.items()]
        if self.feedback:
            out += ["", "feedback: " + ", ".join(f"{k} {v:,}" for k, v in self.feedback.items())]
        return "\n".join(out)


def _row(name: str, s: Scores) -> dict[str, Any]:
    n = len(s.conversion)

    def per_k(x: F64) -> float:
        return float(np.mean(x) * 1000) if n else float("nan")

    return {
        "policy": name,
        "n": n,
        "conversions / 1k": per_k(s.conversion),
        "revenue / 1k": per_k(s.revenue),
        "margin / 1k": per_k(s.margin),
    }


def decompose_gap(
    world: World,
    cust: I64,
    scored: pd.DataFrame,
    at: datetime,
    arm: str = "model",
    value: str = "margin",
    quiet: npt.NDArray[np.bool_] | None = None,
) -> dict[str, float]:
    """Where an arm loses value against the oracle, as shares of the oracle's ``value``.

    Each figure swaps one part of the arm's actions for the oracle's and scores the result
    with the truth: the oracle's offer on our channel and hour (what a perfect offer choice
    would add), our offer on the best channel and hour for it, our offer and channel at
    the best allowed hour; and the oracle that knows every trait except the customer's
    idiosyncratic taste for single offers (``offer_noise``, not observable from any data),
    a realistic ceiling. Only the arm's treated customers count.
    """
    import copy

    m = (scored["ok"] & ~scored["holdout"] & (scored["arm"] == arm)).to_numpy()
    c = cust[m]
    o = scored["offer"].to_numpy(dtype=np.int64)[m]
    ch = scored["channel"].to_numpy(dtype=np.int64)[m]
    h = scored["local_hour"].to_numpy(dtype=np.float64)[m]
    offers = valid_offers(world, at)

    def val(oo: I64, cc: I64, hh: F64) -> float:
        sc = _score(world, c, oo, cc, hh)
        return float(np.mean(sc.margin if value == "margin" else sc.revenue))

    oo, oc, oh = restricted_oracle(world, c, offers, value, quiet)
    oracle = val(oo, np.maximum(oc, 0), oh)
    if oracle <= 0 or not m.any():
        return {}
    # best channel and hour for our offer / best hour for our offer and channel
    allowed = _allowed(world, c)
    best = np.zeros(len(c))
    best_ch = np.maximum(ch, 0)
    best_h = h.copy()
    best_hour_only = np.zeros(len(c))
    hour_for_ours = h.copy()
    for k in range(len(CHANNELS)):
        for hour in range(24):
            if quiet is not None and quiet[k, hour]:
                continue
            v = world.expected_revenue(
                c, np.maximum(o, 0), np.full(len(c), k), np.full(len(c), float(hour))
            )
            v = np.where(allowed[:, k] & (o >= 0), v, 0.0)
            better = v > best
            best, best_ch = np.where(better, v, best), np.where(better, k, best_ch)
            best_h = np.where(better, float(hour), best_h)
            same = (ch == k) & (v > best_hour_only)
            best_hour_only = np.where(same, v, best_hour_only)
            hour_for_ours = np.where(same, float(hour), hour_for_ours)
    traits = copy.copy(world)
    traits.offer_noise = np.zeros_like(world.offer_noise)
    to, tc, th = restricted_oracle(traits, c, offers, value, quiet)
    return {
        "ours": val(o, ch, h) / oracle,
        "oracle's offer, our channel and hour": val(np.where(o >= 0, oo, -1), ch, h) / oracle,
        "our offer, best channel and hour for it": val(o, best_ch, best_h) / oracle,
        "our offer and channel, best hour": val(o, ch, hour_for_ours) / oracle,
        "oracle without per-offer taste (ceiling)": val(to, np.maximum(tc, 0), th) / oracle,
    }


def summarize(
    scored: pd.DataFrame,
    refs: dict[str, Scores],
    errors: int,
    seconds: float,
    headline_arm: str = "model",
) -> SimResult:
    """Per arm of the service: the arm's value and every reference on the same customers."""
    ok = scored["ok"].to_numpy(dtype=bool)
    hold = scored["holdout"].to_numpy(dtype=bool)
    arms = scored["arm"].to_numpy()
    ours = Scores(
        *(scored[c].to_numpy(dtype=np.float64) for c in ("conversion", "revenue", "margin"))
    )
    treated_arms = sorted({str(a) for a in arms[ok & ~hold]}, key=lambda a: (a != headline_arm, a))
    rows: list[dict[str, Any]] = []
    groups = [(f"arm {a}", ok & ~hold & (arms == a)) for a in treated_arms]
    groups.append(("all treated", ok & ~hold))
    for label, mask in groups:
        block = [_row(f"{label}: ours", ours.take(mask))]
        block += [_row(f"{label}: {name}", s.take(mask)) for name, s in refs.items()]
        oracle_rev = block[1 + list(refs).index("oracle (revenue)")]
        oracle_mar = block[1 + list(refs).index("oracle (margin)")]
        for r in block:
            r["conversions vs oracle"] = r["conversions / 1k"] / oracle_rev["conversions / 1k"]
            r["revenue vs oracle"] = r["revenue / 1k"] / oracle_rev["revenue / 1k"]
            r["margin vs oracle"] = r["margin / 1k"] / oracle_mar["margin / 1k"]
        rows += block
    if hold.any():
        r = _row("holdout arm: realised (no message)", ours.take(ok & hold))
        r.update({"conversions vs oracle": 0.0, "revenue vs oracle": 0.0, "margin vs oracle": 0.0})
        rows.append(r)
    paired_rows = []
    head = ok & ~hold & (arms == headline_arm)
    if head.sum() > 1:
        for name, ref in refs.items():
            row: dict[str, Any] = {"reference": name, "n": int(head.sum())}
            for col, a, b in (
                ("conversions / 1k", ours.conversion, ref.conversion),
                ("revenue / 1k", ours.revenue, ref.revenue),
                ("margin / 1k", ours.margin, ref.margin),
            ):
                d = (a[head] - b[head]) * 1000
                half = 1.96 * float(np.std(d, ddof=1) / math.sqrt(len(d)))
                m = float(np.mean(d))
                row[col] = m
                row[f"{col} CI"] = (m - half, m + half)
            paired_rows.append(row)
    return SimResult(
        pd.DataFrame(rows), pd.DataFrame(paired_rows), scored, errors, seconds,
        headline=headline_arm,
    )  # fmt: skip


def simulate_inprocess(
    world: World,
    cust: I64,
    decide: Callable[[str, str], Response],
    seed: int = 0,
    data_dir: Path | None = None,
    quiet: npt.NDArray[np.bool_] | None = None,
) -> SimResult:
    """Score ``decide(customer_id, now_iso)`` (a response dict, or None on error)."""
    t0 = time.perf_counter()
    at = decision_time(world)
    now = at.isoformat()
    responses = [decide(str(c), now) for c in world.customer_ids[cust]]
    scored = score_responses(world, cust, responses)
    refs = reference_policies(world, cust, at, seed, data_dir, quiet)
    errors = sum(r is None for r in responses)
    return summarize(scored, refs, errors, time.perf_counter() - t0)


# ---------------------------------------------------------------------------------- HTTP


def _client(
    url: str, api_key: str | None, concurrency: int, timeout_s: float, transport: Any
) -> Any:
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(
        base_url=url.rstrip("/"),
        headers=headers,
        timeout=timeout_s,
        limits=limits,
        transport=transport,
    )


async def _post_all(
    url: str,
    path: str,
    bodies: Sequence[dict[str, Any]],
    api_key: str | None,
    concurrency: int,
    timeout_s: float,
    transport: Any,
) -> tuple[list[Response], int]:
    """POST every body with at most ``concurrency`` in flight; one retry on 5xx / transport
    errors. Returns (response JSON in input order, None on failure; number of failures)."""
    import httpx

    sem = asyncio.Semaphore(concurrency)
    out: list[Response] = [None] * len(bodies)
    errors = 0
    async with _client(url, api_key, concurrency, timeout_s, transport) as client:

        async def one(i: int, body: dict[str, Any]) -> None:
            nonlocal errors
            async with sem:
                for attempt in range(2):
                    try:
                        r = await client.post(path, json=body)
                    except httpx.HTTPError:
                        if attempt:
                            break
                        continue
                    if r.status_code == 200:
                        out[i] = r.json()
                        return
                    if r.status_code < 500 or attempt:
                        break
            errors += 1

        await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))
    return out, errors


async def fetch_decisions(
    url: str,
    customer_ids: Sequence[str],
    now_iso: str | Sequence[str],
    api_key: str | None = None,
    concurrency: int = 32,
    timeout_s: float = 10.0,
    transport: Any = None,
    placement: str = "campaign",
    arm: str | None = None,
) -> tuple[list[Response], int]:
    """POST /decide for every customer (``now_iso``: one time, or one per customer).

    ``arm``: allocate every customer to this arm of the default experiment (as a caller
    that allocates on its side would, e.g. an exploration campaign); None: the service
    allocates."""
    nows = [now_iso] * len(customer_ids) if isinstance(now_iso, str) else list(now_iso)
    extra: dict[str, Any] = {"experiment": {"arm": arm}} if arm else {}
    bodies = [
        {"customer_id": cid, "context": {"placement": placement}, "now": now, **extra}
        for cid, now in zip(customer_ids, nows, strict=True)
    ]
    return await _post_all(url, "/decide", bodies, api_key, concurrency, timeout_s, transport)


async def post_feedback(
    url: str,
    events: Sequence[dict[str, Any]],
    api_key: str | None = None,
    concurrency: int = 32,
    timeout_s: float = 10.0,
    transport: Any = None,
) -> tuple[int, int]:
    """POST /feedback for every event; (accepted, failed)."""
    res, errors = await _post_all(
        url, "/feedback", events, api_key, concurrency, timeout_s, transport
    )
    return sum(r is not None for r in res), errors


def simulate_http(
    world: World,
    cust: I64,
    url: str,
    api_key: str | None = None,
    concurrency: int = 32,
    seed: int = 0,
    data_dir: Path | None = None,
    transport: Any = None,
    days: int = 1,
    feedback: bool = True,
    attribution_days: float = 2.0,
    quiet: npt.NDArray[np.bool_] | None = None,
    arm: str | None = None,
) -> SimResult:
    t0 = time.perf_counter()
    nows = decision_times(world, len(cust), days)
    ids = [str(c) for c in world.customer_ids[cust]]
    responses, errors = asyncio.run(
        fetch_decisions(
            url,
            ids,
            [t.isoformat() for t in nows],
            api_key,
            concurrency,
            transport=transport,
            arm=arm,
        )
    )
    scored = score_responses(world, cust, responses)
    refs = reference_policies(world, cust, nows[0], seed, data_dir, quiet)
    res = summarize(scored, refs, errors, 0.0, headline_arm=arm or "model")
    res.gap = decompose_gap(world, cust, scored, nows[0], arm or "model", "margin", quiet)
    if feedback:
        organic = organic_model(world, data_dir, attribution_days)
        out = draw_outcomes(world, cust, scored, organic, seed)
        events = feedback_events(out, scored, nows)
        accepted, failed = asyncio.run(
            post_feedback(url, events, api_key, concurrency, transport=transport)
        )
        res.per_customer = pd.concat(
            [scored, out.drop(columns=["decision_id"]).add_prefix("drawn_")], axis=1
        )
        res.feedback = {
            "events posted": accepted,
            "failed": failed,
            "message conversions": int(out["message_converted"].sum()),
            "organic conversions": int(out["organic_converted"].sum()),
        }
    res.seconds = time.perf_counter() - t0
    return res
