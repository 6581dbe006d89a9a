"""The simulation's result: per-arm figures against the references, paired differences, and
where the headline arm loses value against the oracle."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from training.datasets.world import CHANNELS, World
from training.simulation.policies import restricted_oracle
from training.simulation.sampling import valid_offers
from training.simulation.scoring import Scores, allowed_channels, score_actions

__all__ = ["SimResult", "choice_mix", "decompose_gap", "summarize"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


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
    #: choice_mix of the headline arm: "offer" / "channel" -> shares chosen vs the oracle's,
    #: and "match" -> how often the arm chose the oracle's offer / channel
    mix: dict[str, pd.DataFrame] = field(default_factory=dict)

    def share(self, arm: str | None = None) -> float:
        """The arm's (default: the headline arm's) margin as a share of the margin oracle."""
        row = self.table[self.table["policy"] == f"arm {arm or self.headline}: ours"]
        return float(row["margin vs oracle"].iloc[0]) if len(row) else float("nan")

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
        for kind in ("offer", "channel"):
            if kind in self.mix:
                t = self.mix[kind].copy()
                for c in ("ours", "oracle"):
                    t[c] = t[c].map(lambda v: f"{v:.1%}")
                out += ["", f"chosen {kind} ({self.headline} arm) next to the margin oracle's:"]
                out += [t.to_string(index=False)]
        if "match" in self.mix:
            out += [""] + [
                f"  {r['what']:<42} {r['share']:.1%}" for _, r in self.mix["match"].iterrows()
            ]
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
    history: pd.DataFrame | None = None,
) -> dict[str, float]:
    """Where an arm loses value against the oracle, as shares of the oracle's ``value``.

    Each figure swaps one part of the arm's actions for the oracle's and scores the result
    with the truth: the oracle's offer on our channel and hour (what a perfect offer choice
    would add), our offer on the best channel and hour for it, our offer and channel at
    the best allowed hour; and the oracle that knows every trait except the customer's
    idiosyncratic taste for single offers (``offer_noise``, not observable from any data),
    a realistic ceiling, and its offer on our channel and hour (the offer gap that data could
    close). With the world's past messages (``history``, see
    :func:`training.simulation.ceiling.load_history`), also that ceiling when the channel
    responses are not known but inferred from the history (Bayes, under the world's own prior:
    :func:`training.simulation.ceiling.history_ceiling`), the most any policy that learns
    from this history could reach. Only the arm's treated customers count.
    """
    import copy

    m = (scored["ok"] & ~scored["holdout"] & (scored["arm"] == arm)).to_numpy()
    c = cust[m]
    o = scored["offer"].to_numpy(dtype=np.int64)[m]
    ch = scored["channel"].to_numpy(dtype=np.int64)[m]
    h = scored["local_hour"].to_numpy(dtype=np.float64)[m]
    offers = valid_offers(world, at)

    def val(oo: I64, cc: I64, hh: F64) -> float:
        sc = score_actions(world, c, oo, cc, hh)
        return float(np.mean(sc.margin if value == "margin" else sc.revenue))

    oo, oc, oh = restricted_oracle(world, c, offers, value, quiet)
    oracle = val(oo, np.maximum(oc, 0), oh)
    if oracle <= 0 or not m.any():
        return {}
    # best channel and hour for our offer / best hour for our offer and channel
    allowed = allowed_channels(world, c)
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
    out = {
        "ours": val(o, ch, h) / oracle,
        "oracle's offer, our channel and hour": val(np.where(o >= 0, oo, -1), ch, h) / oracle,
        "our offer, best channel and hour for it": val(o, best_ch, best_h) / oracle,
        "our offer and channel, best hour": val(o, ch, hour_for_ours) / oracle,
        "oracle without per-offer taste (ceiling)": val(to, np.maximum(tc, 0), th) / oracle,
        # the best offer any data could show (traits known, the per-offer noise not)
        "its offer, our channel and hour": val(np.where(o >= 0, to, -1), ch, h) / oracle,
    }
    if history is not None:
        from training.simulation.ceiling import history_ceiling

        ho, hc, hh = history_ceiling(world, c, offers, history, value, quiet)
        out["ceiling, channel inferred from the history"] = val(ho, hc, hh) / oracle
    return out


def choice_mix(
    world: World,
    cust: I64,
    scored: pd.DataFrame,
    at: datetime,
    arm: str = "model",
    value: str = "margin",
    quiet: npt.NDArray[np.bool_] | None = None,
) -> dict[str, pd.DataFrame]:
    """Which offers and channels an arm chose, next to the oracle's choices for the same
    customers (a single offer winning everywhere without reason shows here), and how often
    the arm's offer / channel was the oracle's. Only the arm's treated customers with an
    action count (the oracle's shares: of the same customers)."""
    m = (scored["ok"] & ~scored["holdout"] & (scored["arm"] == arm)).to_numpy()
    o = scored["offer"].to_numpy(dtype=np.int64)[m]
    act = o >= 0
    if not act.any():
        return {}
    c = cust[m][act]
    o = o[act]
    ch = scored["channel"].to_numpy(dtype=np.int64)[m][act]
    oo, oc, _ = restricted_oracle(world, c, valid_offers(world, at), value, quiet)
    ids = world.offers["offer_id"].to_numpy()

    def table(ours: I64, oracle: I64, names: npt.NDArray[Any], label: str) -> pd.DataFrame:
        k = len(names)
        a = np.bincount(ours, minlength=k) / len(ours)
        b = np.bincount(oracle[oracle >= 0], minlength=k) / max(int((oracle >= 0).sum()), 1)
        t = pd.DataFrame({label: names, "ours": a, "oracle": b})
        t = t[(t["ours"] > 0) | (t["oracle"] > 0)]
        return t.sort_values(["ours", "oracle"], ascending=False).reset_index(drop=True)

    match = pd.DataFrame(
        {
            "what": [
                f"offer is the oracle's ({len(c):,} actions)",
                "channel is the oracle's",
                "offer and channel are the oracle's",
            ],
            "share": [
                float(np.mean(o == oo)),
                float(np.mean(ch == oc)),
                float(np.mean((o == oo) & (ch == oc))),
            ],
        }
    )
    return {
        "offer": table(o, oo, ids, "offer"),
        "channel": table(ch, oc, np.array(CHANNELS), "channel"),
        "match": match,
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
