"""Estimator selection: which off-policy estimator to trust on which log.

Two sources of a known truth, each drawn ``reps`` times:

**The simulator** (:func:`simulate_harness`). Customers of the synthetic world (``World.load``
of a world folder, or the world's latent traits generated in memory) get a decision from an
exploration policy built like the service's ``explore`` arm: with probability
``1 - epsilon`` the model's action, else a channel uniformly among the consented ones, one
of its allowed local hours (outside ``policy.yaml``'s quiet hours) uniformly, and one of the
``explore_top`` best offers by the model uniformly; the logged propensity is the exact
probability of the action. The reward (``opened``, ``clicked`` or ``converted``) is drawn
from the world's response model, and the true value of every candidate policy on the same
customers is computed from that model (``World.p_open``, ``World.expected_conversion``), so
each estimator's error and whether its interval covers the truth are known.

The "model" is the world's truth seen through noise (an imperfect, fixed model: the offer by
expected value, the channel and hour by open probability, each with its own noise); the
context the estimators see is observable proxies of the latent traits (lifecycle, time
zone, consent, noisy past open rates per channel, a noisy typical active hour), never the
traits themselves. Candidates:

| candidate | action |
|---|---|
| ``model`` | the model's (offer, channel, hour) |
| ``rule_email_10h`` | the model's offer by e-mail at 10:00 (the model's channel and hour without e-mail consent) |
| ``send_time_19h`` | the model's offer and channel at 19:00 local |
| ``channel_push`` | the model's offer by push at the model's hour (19:00 if quiet for push; the model's channel without push consent) |

In the log each candidate's action is in column ``cand_<name>`` (``column:cand_<name>``).

**A split of an exploration log** (:func:`split_harness`): the log's rows are split in two
at random; on one half the candidate's on-policy value is estimated without a model by
rejection sampling (keep row ``i`` with probability ``w_i / max w``: the kept rows are
distributed as if the candidate had chosen, so their mean reward is an unbiased estimate of
its value); the estimators run on the other half. That "truth" is itself noisy, so an
interval counts as covering when ``|estimate - truth| <= sqrt(half-width^2 + (z se_truth)^2)``.

**The figures**, per candidate and estimator, over the repetitions: the mean truth, the
relative error ``|estimate - truth| / truth`` (mean) and the relative RMSE, the coverage of
the CLT and of the bootstrap interval, and the mean interval width. **The recommendation**:
among (estimator, interval) pairs whose coverage is at least ``1 - alpha`` minus two binomial
standard errors (``2 sqrt(alpha (1 - alpha) / reps)``) on *every* candidate, the one with the
lowest mean relative error; if none qualifies, the one with the best worst-case coverage.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from training.measurement.ope.estimators import ALL_METHODS, F64, I64
from training.measurement.ope.frame import evaluate_frame
from training.measurement.ope.reward import RewardModel

__all__ = [
    "HarnessResult",
    "SimConfig",
    "recommend",
    "simulate_harness",
    "simulated_log",
    "split_harness",
    "summarise",
]

Bool = npt.NDArray[np.bool_]
REWARDS = ("opened", "clicked", "converted")


@dataclass(frozen=True)
class SimConfig:
    customers: int = 4000  # decisions per repetition
    reps: int = 20
    epsilon: float = 0.5  # exploration rate of the logging policy
    explore_top: int = 1  # offers exploration draws from (the model's best ones)
    reward: str = "clicked"
    reward_model: RewardModel = "lgbm"
    folds: int = 5
    n_boot: int = 200
    dm_refits: int = 20
    alpha: float = 0.05
    seed: int = 0
    world_customers: int = 40_000  # size of the in-memory world when no folder is given
    model_noise: float = 0.5  # sd of the model's errors (logit scale; hours: x 4)


@dataclass
class HarnessResult:
    source: str
    runs: pd.DataFrame  # one row per (rep, policy, method)
    summary: pd.DataFrame  # one row per (policy, method)
    ranking: pd.DataFrame  # one row per (method, interval)
    recommended: str
    config: dict[str, Any]
    seconds: float
    notes: list[str] = field(default_factory=list)

    def render(self) -> str:
        lines = [f"Estimator-selection harness: {self.source}",
                 "  " + ", ".join(f"{k}={v}" for k, v in self.config.items()),
                 f"  {self.seconds:.0f} s"]  # fmt: skip
        lines += [f"  {n}" for n in self.notes]
        s = self.summary.copy()
        with pd.option_context("display.width", 200, "display.max_rows", 500):
            cols = ["policy", "method", "truth", "mean_estimate", "rel_error", "rel_rmse",
                    "cover_clt", "cover_boot", "width_clt", "width_boot"]  # fmt: skip
            lines.append(s[cols].to_string(index=False, float_format=lambda v: f"{v:.3g}"))
            lines.append("")
            lines.append("Ranking (coverage on the worst candidate, mean relative error):")
            lines.append(self.ranking.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
        lines.append(f"RECOMMENDED: {self.recommended}")
        rec = self.summary[self.summary["method"] == self.recommended.split(" ")[0]]
        kind = "boot" if "bootstrap" in self.recommended else "clt"
        for _, r in rec.iterrows():
            lines.append(
                f"  {r['policy']:<24} truth {r['truth']:.4g}  relative error "
                f"{r['rel_error']:.1%}  95 % coverage {r[f'cover_{kind}']:.0%}"
            )
        return "\n".join(lines)


# ------------------------------------------------------------------------------ scoring


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    def agg(g: pd.DataFrame) -> pd.Series:
        t = g["truth"].to_numpy()
        e = g["value"].to_numpy()
        denom = np.maximum(np.abs(t), 1e-12)
        return pd.Series(
            {
                "truth": float(np.mean(t)),
                "mean_estimate": float(np.nanmean(e)),
                "rel_error": float(np.nanmean(np.abs(e - t) / denom)),
                "rel_rmse": float(np.sqrt(np.nanmean(((e - t) / denom) ** 2))),
                "cover_clt": float(np.mean(g["cover_clt"])),
                "cover_boot": float(np.mean(g["cover_boot"])) if g["cover_boot"].notna().all()
                else float("nan"),
                "width_clt": float(np.nanmean(g["clt_high"] - g["clt_low"])),
                "width_boot": float(np.nanmean(g["boot_high"] - g["boot_low"])),
                "reps": len(g),
            }
        )  # fmt: skip

    rows = [
        {"policy": pol, "method": m, **agg(g).to_dict()}
        for (pol, m), g in runs.groupby(["policy", "method"], sort=False)
    ]
    return pd.DataFrame(rows)


def recommend(summary: pd.DataFrame, alpha: float, reps: int) -> tuple[str, pd.DataFrame]:
    """(recommended "METHOD (CLT|bootstrap interval)", ranking table); see the module doc."""
    need = 1 - alpha - 2 * math.sqrt(alpha * (1 - alpha) / max(reps, 1))
    rows = []
    for m, g in summary.groupby("method", sort=False):
        for kind, col in (("CLT", "cover_clt"), ("bootstrap", "cover_boot")):
            if g[col].isna().any():
                continue
            rows.append(
                {
                    "method": m,
                    "interval": kind,
                    "worst_coverage": float(g[col].min()),
                    "mean_coverage": float(g[col].mean()),
                    "mean_rel_error": float(g["rel_error"].mean()),
                    "worst_rel_error": float(g["rel_error"].max()),
                    "qualifies": bool(g[col].min() >= need),
                }
            )
    rank = pd.DataFrame(rows)
    ok = rank[rank["qualifies"]].sort_values("mean_rel_error", kind="stable")
    if len(ok):
        best = ok.iloc[0]
    else:
        best = rank.sort_values(["worst_coverage", "mean_rel_error"], ascending=[False, True]).iloc[
            0
        ]
    rank = rank.sort_values(["qualifies", "mean_rel_error"], ascending=[False, True])
    return f"{best['method']} ({best['interval']} interval)", rank.reset_index(drop=True)


def _covered(
    est: pd.DataFrame, truth: float, truth_se: float = 0.0, z: float = 1.96
) -> pd.DataFrame:
    out = est.copy()
    out["truth"] = truth
    for kind in ("clt", "boot"):
        lo, hi = out[f"{kind}_low"], out[f"{kind}_high"]
        if truth_se > 0:
            half = (hi - lo) / 2
            mid = (hi + lo) / 2
            ok = np.abs(mid - truth) <= np.sqrt(half**2 + (z * truth_se) ** 2)
        else:
            ok = (lo <= truth) & (truth <= hi)
        out[f"cover_{kind}"] = np.where(lo.notna(), ok, np.nan)
    return out


# ---------------------------------------------------------------------------- simulator


@dataclass
class _SimWorld:
    world: Any
    offers: I64  # valid offer indices
    quiet: Bool  # (channel, hour)
    noise_offer: F64  # (n_world, n_offers)
    noise_resp: F64  # (n_world, n_channels)
    noise_peak: F64  # (n_world,)
    obs_resp: F64  # observable proxies
    obs_peak: F64


def _load_world(data: Path | None, cfg: SimConfig) -> tuple[Any, str]:
    from training.datasets import world as w

    if data is not None and (data / "world.json").exists():
        return w.World.load(data), f"world {data}"
    wc = w.WorldConfig(n_customers=cfg.world_customers)
    world = w._make_world(wc, np.random.default_rng(wc.seed))
    return world, f"in-memory world ({cfg.world_customers:,} customers, world seed {wc.seed})"


def _sim_world(world: Any, cfg: SimConfig) -> _SimWorld:
    from training.simulation import quiet_mask, valid_offers
    from training.simulation.sampling import decision_time

    n, n_o = len(world.customer_ids), len(world.offers)
    n_ch = world.channel_resp.shape[1]
    rng = np.random.default_rng(cfg.seed + 101)  # the model's errors: fixed for all reps
    s = cfg.model_noise
    offers = valid_offers(world, decision_time(world))
    if len(offers) == 0:
        offers = np.arange(n_o, dtype=np.int64)
    return _SimWorld(
        world,
        offers,
        quiet_mask(),
        rng.normal(0, s, (n, n_o)),
        rng.normal(0, s, (n, n_ch)),
        rng.normal(0, 4 * s, n),
        world.channel_resp + rng.normal(0, 0.6, (n, n_ch)),
        (world.hour_peak + rng.normal(0, 2.0, n)) % 24,
    )


def _p_reward(sw: _SimWorld, reward: str, c: I64, o: I64, ch: I64, h: F64) -> F64:
    from training.datasets.world import P_CLICK_GIVEN_OPEN, P_DELIVER

    w = sw.world
    if reward == "converted":
        out: F64 = w.expected_conversion(c, o, ch, h)
        return out
    allowed = w.consent[c, ch] & ~w.opted_out[c]
    p = np.where(allowed, P_DELIVER[ch] * w.p_open(c, ch, h), 0.0)
    if reward == "clicked":
        p = p * P_CLICK_GIVEN_OPEN
    return np.asarray(p, dtype=np.float64)


def _sigmoid(x: F64) -> F64:
    out: F64 = 1.0 / (1.0 + np.exp(-x))
    return out


def _model_scores(sw: _SimWorld, c: I64) -> tuple[F64, F64]:
    """The model's belief: offer value (n, n_offers_valid) and P(open) (n, channel, hour)."""
    from training.datasets.world import CHANNEL_BASE_LOGIT, HOUR_KAPPA, P_DELIVER

    w = sw.world
    n = len(c)
    price = w.offers["price"].to_numpy(np.float64)
    cols = []
    for o in sw.offers:
        pc = w.p_convert_given_click(c, np.full(n, o))
        cols.append(_sigmoid(np.log(pc / (1 - pc)) + sw.noise_offer[c, o]) * price[o])
    val = np.column_stack(cols)
    peak = w.hour_peak[c] + sw.noise_peak[c]
    hours = np.arange(24.0)
    hs = np.cos(2 * math.pi * (hours[None, :] - peak[:, None]) / 24.0)  # (n, 24)
    logit = (CHANNEL_BASE_LOGIT[None, :] + w.channel_resp[c] + sw.noise_resp[c])[:, :, None]
    p_open = P_DELIVER[None, :, None] * _sigmoid(logit + HOUR_KAPPA * hs[:, None, :])
    return val, p_open


@dataclass
class _Decisions:
    cust: I64
    greedy: tuple[I64, I64, I64]  # offer index (world), channel, hour
    top: I64  # (n, explore_top) world offer indices
    allowed: Bool  # (n, channel, hour): consented and outside quiet hours


def _decide(sw: _SimWorld, c: I64, cfg: SimConfig) -> _Decisions:
    w = sw.world
    val, p_open = _model_scores(sw, c)
    order = np.argsort(-val, axis=1, kind="stable")
    top = sw.offers[order[:, : max(cfg.explore_top, 1)]]
    consent = w.consent[c] & ~w.opted_out[c][:, None]
    allowed = consent[:, :, None] & ~sw.quiet[None, :, :]
    score = np.where(allowed, p_open, -1.0).reshape(len(c), -1)
    best = score.argmax(axis=1)
    ch, h = best // 24, best % 24
    return _Decisions(c, (top[:, 0], ch.astype(np.int64), h.astype(np.int64)), top, allowed)


def _explore_prob(d: _Decisions, o: I64, ch: I64, h: I64, eps: float) -> F64:
    n = len(d.cust)
    rows = np.arange(n)
    n_hours = d.allowed.sum(axis=2)  # (n, channel)
    n_ch = (n_hours > 0).sum(axis=1)
    k = d.top.shape[1]
    in_top = (d.top == o[:, None]).any(axis=1)
    ok = d.allowed[rows, ch, h] & in_top & (n_ch > 0)
    q = np.where(ok, 1.0 / (np.maximum(n_ch, 1) * np.maximum(n_hours[rows, ch], 1) * k), 0.0)
    g = (o == d.greedy[0]) & (ch == d.greedy[1]) & (h == d.greedy[2])
    out: F64 = (1 - eps) * g + eps * q
    return out


def _draw_explore(d: _Decisions, rng: np.random.Generator) -> tuple[I64, I64, I64]:
    n = len(d.cust)
    rows = np.arange(n)
    has = d.allowed.any(axis=2)  # (n, channel)
    g = rng.gumbel(size=has.shape) + np.where(has, 0.0, -np.inf)
    ch = g.argmax(axis=1)
    gh = rng.gumbel(size=(n, 24)) + np.where(d.allowed[rows, ch], 0.0, -np.inf)
    h = gh.argmax(axis=1)
    o = d.top[rows, rng.integers(0, d.top.shape[1], n)]
    return o.astype(np.int64), ch.astype(np.int64), h.astype(np.int64)


def _candidates(d: _Decisions) -> dict[str, tuple[I64, I64, I64]]:
    from training.datasets.world import CHANNELS

    o, ch, h = d.greedy
    n = len(o)
    rows = np.arange(n)
    email, push = CHANNELS.index("email"), CHANNELS.index("push")
    ok_e = d.allowed[rows, email, 10]
    rule = (o, np.where(ok_e, email, ch), np.where(ok_e, 10, h))
    ok19 = d.allowed[rows, ch, 19]
    send = (o, ch, np.where(ok19, 19, h))
    has_push = d.allowed[rows, push].any(axis=1)
    ph = np.where(d.allowed[rows, push, h], h, 19)
    ok_p = has_push & d.allowed[rows, push, ph]
    chan = (o, np.where(ok_p, push, ch), np.where(ok_p, ph, h))
    return {
        "model": d.greedy,
        "rule_email_10h": rule,
        "send_time_19h": send,
        "channel_push": chan,
    }


def _label(world: Any, o: I64, ch: I64, h: I64) -> npt.NDArray[np.object_]:
    from training.datasets.world import CHANNELS

    ids = world.offers["offer_id"].astype(str).to_numpy()
    names = np.array(CHANNELS)
    return np.array(
        [f"{a}|{b}|{c}" for a, b, c in zip(ids[o], names[ch], h, strict=True)], dtype=object
    )


def _sim_log(
    sw: _SimWorld, cfg: SimConfig, rep: int
) -> tuple[pd.DataFrame, dict[str, float], list[str]]:
    """One exploration log of ``cfg.customers`` decisions, and each candidate's true value."""
    from training.datasets.world import CHANNELS, LIFECYCLES

    w = sw.world
    rng = np.random.default_rng([cfg.seed, rep])
    pool = np.flatnonzero(~w.anonymous & ~w.opted_out & w.consent.any(axis=1))
    c = np.sort(rng.choice(pool, min(cfg.customers, len(pool)), replace=False))
    d = _decide(sw, c, cfg)
    explore = rng.random(len(c)) < cfg.epsilon
    eo, ech, eh = _draw_explore(d, rng)
    o = np.where(explore, eo, d.greedy[0])
    ch = np.where(explore, ech, d.greedy[1])
    h = np.where(explore, eh, d.greedy[2])
    mu = _explore_prob(d, o, ch, h, cfg.epsilon)
    p = _p_reward(sw, cfg.reward, c, o, ch, h.astype(np.float64))
    r = (rng.random(len(c)) < p).astype(np.float64)
    df = pd.DataFrame(
        {
            "action": _label(w, o, ch, h),
            "propensity": mu,
            "reward": r,
            "x_lifecycle": np.array(LIFECYCLES)[w.lifecycle[c]],
            "x_tz_offset": w.tz_offset[c].astype(np.float64),
            "x_active_hour": sw.obs_peak[c],
        }
    )
    for j, name in enumerate(CHANNELS):
        df[f"x_consent_{name}"] = w.consent[c, j].astype(np.float64)
        df[f"x_open_{name}"] = sw.obs_resp[c, j]
    truth: dict[str, float] = {}
    specs = []
    for name, (co, cch, chh) in _candidates(d).items():
        col = f"cand_{name}"
        df[col] = _label(w, co, cch, chh)
        spec = f"column:{col}"
        specs.append(spec)
        truth[spec] = float(np.mean(_p_reward(sw, cfg.reward, c, co, cch, chh.astype(np.float64))))
    return df, truth, specs


def simulated_log(
    cfg: SimConfig, data: Path | None = None, rep: int = 0
) -> tuple[pd.DataFrame, dict[str, float]]:
    """One exploration log in the OPE schema (with the candidates' ``cand_*`` columns) and
    each candidate's true value on its customers."""
    world, _ = _load_world(data, cfg)
    df, truth, _ = _sim_log(_sim_world(world, cfg), cfg, rep)
    return df, truth


def simulate_harness(
    cfg: SimConfig,
    data: Path | None = None,
    methods: Sequence[str] = ALL_METHODS,
    progress: Callable[[str], None] | None = None,
) -> HarnessResult:
    """The simulator half of the harness (see the module doc)."""
    if cfg.reward not in REWARDS:
        raise ValueError(f"reward must be one of {REWARDS}, not {cfg.reward!r}")
    t0 = time.perf_counter()
    world, source = _load_world(data, cfg)
    sw = _sim_world(world, cfg)
    runs = []
    for rep in range(cfg.reps):
        df, truth, specs = _sim_log(sw, cfg, rep)
        est = evaluate_frame(
            df, specs, cfg.reward_model, alpha=cfg.alpha, n_boot=cfg.n_boot, seed=cfg.seed + rep,
            folds=cfg.folds, methods=methods, dm_refits=cfg.dm_refits, reward_range=(0.0, 1.0),
            unsupported="warn",  # support holds by construction (exploration covers them)
        )  # fmt: skip
        notes = est.attrs.get("reward_model_fallback")
        for spec in specs:
            e = est[est["policy"] == spec]
            runs.append(_covered(e, truth[spec]).assign(rep=rep, fallback=notes or ""))
        if progress:
            progress(f"rep {rep + 1}/{cfg.reps} ({time.perf_counter() - t0:.0f} s)")
    all_runs = pd.concat(runs, ignore_index=True)
    all_runs["policy"] = all_runs["policy"].str.removeprefix("column:cand_")
    summary = summarise(all_runs)
    rec, rank = recommend(summary, cfg.alpha, cfg.reps)
    notes = []
    fb = all_runs.loc[all_runs["fallback"] != "", "fallback"]
    if len(fb):
        notes.append(f"reward model fell back to means in {fb.nunique()} fits: {fb.iloc[0]}")
    conf = {k: getattr(cfg, k) for k in ("customers", "reps", "epsilon", "explore_top", "reward",
                                          "reward_model", "folds", "n_boot", "seed")}  # fmt: skip
    return HarnessResult(
        f"simulator, {source}", all_runs, summary, rank, rec, conf, time.perf_counter() - t0, notes
    )


# ------------------------------------------------------------------------- split of a log


def split_harness(
    df: pd.DataFrame,
    policies: Sequence[str],
    reps: int = 20,
    reward_model: RewardModel = "lgbm",
    features: Sequence[str] | None = None,
    folds: int = 5,
    n_boot: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
    methods: Sequence[str] = ALL_METHODS,
    progress: Callable[[str], None] | None = None,
) -> HarnessResult:
    """The log-split half of the harness (see the module doc)."""
    from training.measurement.ope.policies import catalogue_actions, policy_dist

    t0 = time.perf_counter()
    from scipy import stats

    z = float(stats.norm.ppf(1 - alpha / 2))
    actions = catalogue_actions(df, policies)
    index = {a: i for i, a in enumerate(actions)}
    a = np.array([index[v] for v in df["action"].astype(str)], dtype=np.int64)
    mu = df["propensity"].to_numpy(np.float64)
    r = df["reward"].to_numpy(np.float64)
    weights = {s: policy_dist(df, actions, s).target(a) / mu for s in policies}
    runs = []
    notes: list[str] = []
    for rep in range(reps):
        rng = np.random.default_rng([seed, rep])
        half = rng.random(len(df)) < 0.5
        ev = df[~half].reset_index(drop=True)
        est = evaluate_frame(
            ev, policies, reward_model, features, alpha, n_boot, seed + rep, folds=folds,
            methods=methods, unsupported="warn",
        )  # fmt: skip
        for s in policies:
            w = weights[s][half]
            if w.max() <= 0:
                notes.append(f"rep {rep}: {s} has no supported row in the truth half")
                continue
            keep = rng.random(len(w)) < w / w.max()
            if keep.sum() < 30:
                notes.append(f"rep {rep}: {s}: only {int(keep.sum())} rows kept for its truth")
                continue
            rk = r[half][keep]
            truth, se = float(rk.mean()), float(rk.std(ddof=1) / math.sqrt(len(rk)))
            e = est[est["policy"] == s]
            runs.append(
                _covered(e, truth, se, z).assign(rep=rep, truth_se=se, kept=int(keep.sum()))
            )
        if progress:
            progress(f"rep {rep + 1}/{reps} ({time.perf_counter() - t0:.0f} s)")
    if not runs:
        raise ValueError(
            "no candidate had enough supported rows for a truth: " + "; ".join(notes[:3])
        )
    all_runs = pd.concat(runs, ignore_index=True)
    summary = summarise(all_runs)
    rec, rank = recommend(summary, alpha, reps)
    conf = {"rows": len(df), "reps": reps, "reward_model": reward_model, "folds": folds,
            "n_boot": n_boot, "seed": seed}  # fmt: skip
    return HarnessResult(
        "split of an exploration log (truth: rejection sampling on the other half)",
        all_runs, summary, rank, rec, conf, time.perf_counter() - t0, notes[:10],
    )  # fmt: skip
