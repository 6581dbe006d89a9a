"""Held-out evaluation of the three models against simple baselines, and ground-truth regret.

Everything is measured on the later (test) period only. Metrics per model:

propensity (opened test messages, label converted)
    AUC, log loss, ECE (10 bins) and a reliability plot, vs "most popular offer" (score = the
    offer's train conversion count) and "offer base rate" (train conversion rate of the
    (offer, channel), shrunk towards the offer's rate). Slices: new (lifecycle 0) vs
    established customers.
send_time (opened test messages)
    top-1 / top-3 hour hit rate (is the message's local hour the argmax / in the top 3 of the
    model's 24 scores for that customer?) and circular mean absolute hour error, vs
    "population best hour" (train open rate by local hour) and "customer's own most frequent
    hour" (argmax act_share). The headline figures use the messages the logging policy sent
    at a random hour (the rule policy always sent at 10:00, so its opened messages say more
    about the policy than about the customer); ``*_all_policies`` use every opened message.
    Slices: new vs established customers.
channel (delivered test messages for log loss, opened ones for top-1)
    top-1 channel accuracy (all channels and opted-in channels only; headline on random-policy
    sends, ``*_all_policies`` on all) and log loss, vs "most used channel" (argmax of sent_<channel>; log loss from the train open rate by channel).

    ECE (10 bins) of every model and baseline that gives a probability (send time: the
    train open rate by local hour; channel: the train open rate by channel).

Data without random-policy sends (no ``policy`` column): the headline figures use every send.

Off-policy value (when held-out sends carry the logging policy's ``propensity``): the
candidate's offer policy valued by SNIPS and DR against the logged policy and "most popular
offer" (:func:`off_policy_value`); promotion requires it not to be significantly worse than the
logged policy.

Regret with the ground truth (:class:`training.datasets.world.World`), **only when the
synthetic world's truth is there** (``world`` is None otherwise, and nothing requires it): for
up to ``REGRET_CUSTOMERS`` held-out customers (their first test message), the true value of
the model's argmax offer / hour / channel vs the true best, and the same for the baselines.
Lower is better; the "relative" figure divides by the mean true best.

Another model on the same rows (:func:`same_rows_metrics`): ``train`` scores the current
champion on the candidate's held-out rows with these same functions (a :class:`Scorer` in
place of the fitted model; held-out metrics only, no plot, regret or off-policy value), so the
``<metric>_vs_champion`` gates compare two models on one set of rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from contracts.features import DEFAULT_SPEC, FeatureSpec
from service.features.vectors import channel_matrix, propensity_matrix, send_time_matrix
from training.pipeline.dataset import Dataset, ModelData, channel_index

__all__ = [
    "EvalResult",
    "Scorer",
    "ece",
    "evaluate_all",
    "format_table",
    "reliability_plot",
    "same_rows_metrics",
]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
REGRET_CUSTOMERS = 5000
EPS = 1e-6


@dataclass
class EvalResult:
    """Model metrics and, per baseline, the same metrics where they apply."""

    kind: str
    metrics: dict[str, float]
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    plots: dict[str, Path] = field(default_factory=dict)

    def flat(self) -> dict[str, float]:
        out = {f"{self.kind}.{k}": v for k, v in self.metrics.items()}
        for b, m in self.baselines.items():
            out.update({f"{self.kind}.baseline_{b}.{k}": v for k, v in m.items()})
        return out


# ------------------------------------------------------------------------------- metrics


def auc(y: npt.NDArray[Any], p: F64) -> float:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, p))


def logloss(y: npt.NDArray[Any], p: F64) -> float:
    p = np.clip(p, EPS, 1 - EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def ece(y: npt.NDArray[Any], p: F64, bins: int = 10) -> float:
    """Expected calibration error, equal-width bins, weighted by bin size."""
    if len(y) == 0:
        return float("nan")
    b = np.minimum((p * bins).astype(np.int64), bins - 1)
    total = 0.0
    for k in range(bins):
        m = b == k
        if m.any():
            total += m.sum() * abs(float(y[m].mean()) - float(p[m].mean()))
    return total / len(y)


def reliability_plot(y: npt.NDArray[Any], p: F64, out: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    q = np.unique(np.quantile(p, np.linspace(0, 1, 11)))
    b = np.clip(np.searchsorted(q, p, side="right") - 1, 0, max(len(q) - 2, 0))
    xs = [float(p[b == k].mean()) for k in range(len(q) - 1) if (b == k).any()]
    ys = [float(y[b == k].mean()) for k in range(len(q) - 1) if (b == k).any()]
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    top = max([*xs, *ys, 0.01]) * 1.1
    ax.plot([0, top], [0, top], "--", color="grey", lw=1)
    ax.plot(xs, ys, "o-")
    ax.set_xlabel("predicted probability (decile mean)")
    ax.set_ylabel("observed rate")
    ax.set_title(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def circular_error(a: I64, b: I64) -> F64:
    d = np.abs(a - b) % 24
    out: F64 = np.minimum(d, 24 - d).astype(np.float64)
    return out


@dataclass(frozen=True)
class Scorer:
    """A model known by its scores only (the registry's ONNX champion), evaluated where a
    fitted LightGBM model would be: ``score`` takes the columns ``columns`` of a matrix in the
    data set's feature order (the model's own feature order, picked from the candidate's)."""

    score: Callable[[F32], F64]
    columns: I64


def _predict(model: Any, x: F32) -> F64:
    if isinstance(model, Scorer):
        return model.score(np.ascontiguousarray(x[:, model.columns]))
    # the booster itself (best iteration): same numbers as predict_proba, without sklearn's
    # feature-name warning for a plain array
    p: F64 = np.asarray(model.booster_.predict(x), dtype=np.float64)
    return p


def _topk(scores: F64, k: int) -> I64:
    out: I64 = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return out


def _random_sends(policy: pd.Series) -> npt.NDArray[np.bool_]:
    """Rows the logging policy sent at random (hour, channel), or every row when the data
    has no random sends (their figures are then confounded by the sending rule)."""
    rnd: npt.NDArray[np.bool_] = policy.to_numpy() == "random"
    if not rnd.any():
        return np.ones(len(rnd), dtype=bool)
    return rnd


def _lifecycle_new(raw: dict[str, F64]) -> npt.NDArray[np.bool_]:
    out: npt.NDArray[np.bool_] = raw["lifecycle"] == 0
    return out


def _first_per_customer(d: ModelData, mask: npt.NDArray[np.bool_], n: int, seed: int) -> I64:
    """Row index of each held-out customer's first message within ``mask`` (sampled)."""
    idx = np.flatnonzero(mask)
    cust = d.meta["customer_id"].to_numpy()[idx]
    _, first = np.unique(cust, return_index=True)
    rows = idx[first]
    if len(rows) > n:
        rows = np.sort(np.random.default_rng(seed).choice(rows, n, replace=False))
    out: I64 = rows.astype(np.int64)
    return out


# ----------------------------------------------------------------------------- priors


def _training_messages(ds: Dataset) -> pd.DataFrame:
    """The sends of the training side: before the cutoff, or (send times tied, a split by
    customer) the sends of the customers no model holds out."""
    if "split" not in ds.window:
        return ds.messages[ds.messages["sent_at"] < ds.cutoff]
    held: set[str] = set()
    for d in ds.models.values():
        held |= set(d.meta.loc[d.test, "customer_id"].astype(str))
    return ds.messages[~ds.messages["customer_id"].astype(str).isin(held)]


def train_priors(ds: Dataset) -> dict[str, Any]:
    """Population rates on the training window (cold start priors for the service)."""
    m = _training_messages(ds)
    deliv = m[m["delivered"]]
    by_hour = deliv.groupby("local_hour")["opened"].mean().reindex(range(24))
    by_hour = by_hour.fillna(float(deliv["opened"].mean()))
    by_ch = deliv.groupby("channel")["opened"].mean().reindex(list(ds.spec.channels)).fillna(0.0)
    opened = m[m["opened"]]
    conv = opened.groupby("offer_id")["converted"].agg(["sum", "mean"])
    conv = conv.reindex(ds.offers["offer_id"]).fillna(0.0)
    popularity = conv["sum"].sort_values(ascending=False, kind="stable")
    return {
        "hour_open_rate": [float(v) for v in by_hour.to_numpy()],
        "best_hour": int(np.argmax(by_hour.to_numpy())),
        "channel_open_rate": {str(k): float(v) for k, v in by_ch.items()},
        "channel_order": [str(c) for c in by_ch.sort_values(ascending=False).index],
        "offer_conversion_rate": {str(k): float(v) for k, v in conv["mean"].items()},
        "offer_order": [str(o) for o in popularity.index],
        "conversion_given_open": float(opened["converted"].mean()) if len(opened) else 0.0,
    }


# ------------------------------------------------------------------------------ models


def evaluate_propensity(
    ds: Dataset, model: Any, world: Any, plot_dir: Path | None, seed: int = 42, ope: bool = True
) -> EvalResult:
    """``plot_dir`` None: no reliability plot; ``ope`` False: no off-policy value."""
    d = ds.models["propensity"]
    tr, te = d.train, d.test
    y = d.y[te]
    p = _predict(model, d.x[te])
    meta_tr, meta_te = d.meta[tr], d.meta[te]
    train = pd.DataFrame(
        {"offer": meta_tr["offer_id"].to_numpy(), "ch": meta_tr["channel"], "y": d.y[tr]}
    )
    count = train.groupby("offer")["y"].sum()
    rate = train.groupby("offer")["y"].mean()
    g = train.groupby(["offer", "ch"])["y"].agg(["sum", "count"])
    k = 20.0  # shrinkage towards the offer's rate
    prior = rate.reindex(g.index.get_level_values(0)).to_numpy()
    g["rate"] = (g["sum"] + k * prior) / (g["count"] + k)
    overall = float(train["y"].mean())
    offers_te = meta_te["offer_id"].to_numpy()
    pop = count.reindex(offers_te).fillna(0.0).to_numpy(dtype=np.float64)
    keys = pd.MultiIndex.from_arrays([offers_te, meta_te["channel"].to_numpy()])
    base = g["rate"].reindex(keys).to_numpy(dtype=np.float64)
    base = np.where(np.isnan(base), rate.reindex(offers_te).fillna(overall).to_numpy(), base)

    new = _lifecycle_new(d.subset_raw(te))
    res = EvalResult("propensity", {}, {"most_popular_offer": {}, "offer_base_rate": {}})
    for name, mask in (("", np.ones(len(y), bool)), ("_new", new), ("_established", ~new)):
        res.metrics[f"auc{name}"] = auc(y[mask], p[mask])
        res.baselines["most_popular_offer"][f"auc{name}"] = auc(y[mask], pop[mask])
        res.baselines["offer_base_rate"][f"auc{name}"] = auc(y[mask], base[mask])
    res.metrics["logloss"] = logloss(y, p)
    res.metrics["ece"] = ece(y, p)
    res.baselines["offer_base_rate"]["logloss"] = logloss(y, base)
    res.baselines["offer_base_rate"]["ece"] = ece(y, base)
    res.metrics["test_rows"] = float(len(y))
    if plot_dir is not None:
        res.plots["reliability"] = reliability_plot(
            y, p, plot_dir / "propensity_reliability.png", "propensity (test period)"
        )

    pop_o = count.reindex(ds.offers["offer_id"]).fillna(0.0).to_numpy(dtype=np.float64)
    if ope and ds.ope is not None:
        off_policy_value(ds, ds.ope, model, pop_o, res, seed)
    if world is None:  # no ground truth (real data): observable metrics only
        return res

    # ground-truth regret: which offer to send (channel fixed to the message's channel)
    rows = _first_per_customer(d, te, REGRET_CUSTOMERS, seed)
    meta_r = d.meta.iloc[rows]
    score, valid = offer_scores(ds, model, d, rows)
    offers = ds.offers.reset_index(drop=True)
    n, n_off = len(rows), len(offers)
    off = np.tile(np.arange(n_off), n)
    widx = world.index_of(meta_r["customer_id"].to_numpy())
    truth = world.p_convert_given_click(np.repeat(widx, n_off), off).reshape(n, n_off)
    price = offers["price"].to_numpy(dtype=np.float64)
    rate_o = rate.reindex(offers["offer_id"]).fillna(0.0).to_numpy(dtype=np.float64)
    ch_names = meta_r["channel"].to_numpy()
    keys = pd.MultiIndex.from_arrays(
        [np.tile(offers["offer_id"].to_numpy(), n), ch_names.repeat(n_off)]
    )
    base_o = g["rate"].reindex(keys).to_numpy(dtype=np.float64).reshape(n, n_off)
    base_o = np.where(np.isnan(base_o), rate_o[None, :], base_o)
    choices = {
        "model": score,
        "most_popular_offer": np.broadcast_to(pop_o, (n, n_off)),
        "offer_base_rate": base_o,
    }
    for target, weight in (("conversion", np.ones(n_off)), ("revenue", price)):
        true_v = np.where(valid, truth * weight, -np.inf)
        best = true_v.max(axis=1)
        for who, s in choices.items():
            pick = np.where(valid, s * weight, -np.inf).argmax(axis=1)
            regret = float(np.mean(best - true_v[np.arange(n), pick]))
            rel = regret / max(float(best.mean()), EPS)
            dest = res.metrics if who == "model" else res.baselines[who]
            dest[f"regret_{target}"] = regret
            dest[f"regret_{target}_relative"] = rel
    res.metrics["regret_customers"] = float(n)
    return res


def offer_scores(
    ds: Dataset, model: Any, d: ModelData, rows: I64
) -> tuple[F64, npt.NDArray[np.bool_]]:
    """(scores, valid): the model's score of every offer for each row of ``d`` in ``rows``
    (the row's own channel and features), and which offers were valid at its send time."""
    meta_r = d.meta.iloc[rows]
    raw_r = {kk: v[rows] for kk, v in d.raw.items()}
    offers = ds.offers.reset_index(drop=True)
    sent = pd.to_datetime(meta_r["sent_at"], utc=True).to_numpy()
    valid = (offers["valid_from"].to_numpy()[None, :] <= sent[:, None]) & (
        offers["valid_to"].to_numpy()[None, :] >= sent[:, None]
    )
    n, n_off = len(rows), len(offers)
    cust = np.repeat(np.arange(n), n_off)
    off = np.tile(np.arange(n_off), n)
    ch = np.repeat(channel_index(meta_r["channel"], ds.spec), n_off)
    x = propensity_matrix(
        ds.spec,
        raw_r,
        meta_r["now_day"].to_numpy(),
        cust,
        offers["category_idx"].to_numpy(dtype=np.int64)[off],
        offers["price"].to_numpy(dtype=np.float64)[off],
        offers["margin"].to_numpy(dtype=np.float64)[off],
        ch,
    )
    return _predict(model, x).reshape(n, n_off), valid


def off_policy_value(
    ds: Dataset, rows: ModelData, model: Any, popularity: F64, res: EvalResult, seed: int
) -> None:
    """The candidate's offer policy (argmax of the model over the valid offers, channel and
    hour as logged) valued off-policy on held-out sends with logged propensities.

    Weights: the logged probability of the offer given the send's channel and time
    (``offer_propensity``; else the send's ``propensity``, exact when the sending policy drew
    the offer independently of a fixed channel and time, as in Hillstrom's design; with a
    joint propensity over channel and time too, rows are also weighted towards the rarer
    channel-time pairs). Reward: converted. Estimates (:mod:`training.measurement.ope`): SNIPS
    (self-normalised, so it stays within the reward's range) and IPS for the candidate and
    for "most popular offer"; the logged policy's own value is the mean reward (on-policy),
    with its 95% interval. The ``ope_vs_logged`` gate refuses a candidate whose SNIPS
    interval lies entirely below the logged policy's interval.
    """
    from training.measurement.ope import MIN_EFFECTIVE_EVENTS, evaluate

    offers = ds.offers["offer_id"].astype(str).tolist()
    index = {o: i for i, o in enumerate(offers)}
    known = rows.meta["offer_id"].astype(str).map(index).notna().to_numpy()
    idx = np.flatnonzero(known).astype(np.int64)
    if len(idx) < 2:
        return
    action = rows.meta["offer_id"].astype(str).map(index).to_numpy()[idx].astype(np.int64)
    reward = rows.y[idx].astype(np.float64)
    propensity = rows.meta["offer_propensity"].to_numpy(dtype=np.float64)[idx]
    score, valid = offer_scores(ds, model, rows, idx)
    n, k = score.shape
    policies = {
        "model": np.where(valid, score, -np.inf).argmax(axis=1),
        "most_popular_offer": np.where(valid, popularity[None, :], -np.inf).argmax(axis=1),
    }
    logged = float(np.mean(reward))
    half = 1.96 * float(np.std(reward, ddof=1)) / float(np.sqrt(n))
    res.baselines["logged_policy"] = {
        "ope_snips_value": logged,
        "ope_snips_low": logged - half,
        "ope_snips_high": logged + half,
    }
    for who, pick in policies.items():
        pi = np.zeros((n, k))
        pi[np.arange(n), pick] = 1.0
        est = {e.method: e for e in evaluate(reward, propensity, action, pi, seed=seed)}
        dest = res.metrics if who == "model" else res.baselines.setdefault(who, {})
        dest["ope_snips_value"] = est["SNIPS"].value
        dest["ope_ips_value"] = est["IPS"].value
        if who != "model":
            continue
        res.metrics.update(
            {
                "ope_snips_low": est["SNIPS"].low,
                "ope_snips_high": est["SNIPS"].high,
                "ope_ess": est["SNIPS"].ess,
                "ope_match_share": float(np.mean(pick == action)),
                "ope_rows": float(n),
                "ope_reliable": float(
                    est["SNIPS"].ess * float(np.mean(reward > 0)) >= MIN_EFFECTIVE_EVENTS
                ),
            }
        )


def _send_time_scores(
    model: Any, raw: dict[str, F64], now: F64, spec: FeatureSpec = DEFAULT_SPEC
) -> F64:
    n = len(now)
    cust = np.repeat(np.arange(n), 24)
    hours = np.tile(np.arange(24), n)
    return _predict(model, send_time_matrix(spec, raw, now, cust, hours)).reshape(n, 24)


def _act_share(raw: dict[str, F64]) -> F64:
    return np.stack([raw[f"act_share_h{h:02d}"] for h in range(24)], axis=1)


def evaluate_send_time(ds: Dataset, model: Any, world: Any, seed: int = 42) -> EvalResult:
    d = ds.models["send_time"]
    tr, te = d.train, d.test
    sel = te & (d.y == 1)
    raw = d.subset_raw(sel)
    meta = d.meta[sel]
    hour = meta["local_hour"].to_numpy(dtype=np.int64)
    scores = _send_time_scores(model, raw, meta["now_day"].to_numpy(), ds.spec)
    # baselines
    tm = d.meta[tr]
    by_hour = (
        pd.Series(d.y[tr])
        .groupby(tm["local_hour"].to_numpy())
        .mean()
        .reindex(range(24))
        .fillna(float(d.y[tr].mean()) if tr.any() else 0.0)
    )
    n = len(hour)
    share = _act_share(raw)
    has = np.nansum(share, axis=1) > 0
    own = np.where(np.isnan(share), -1.0, share) + 1e-9 * by_hour.to_numpy()[None, :]
    own = np.where(has[:, None], own, by_hour.to_numpy()[None, :])
    rankers: dict[str, F64] = {
        "model": scores,
        "population_best_hour": np.broadcast_to(by_hour.to_numpy(), (n, 24)),
        "customer_top_hour": own,
    }
    new = _lifecycle_new(raw)
    rnd = _random_sends(meta["policy"])
    res = EvalResult("send_time", {}, {"population_best_hour": {}, "customer_top_hour": {}})
    for who, s in rankers.items():
        top = _topk(s, 3)
        hit1 = top[:, 0] == hour
        hit3 = (top == hour[:, None]).any(axis=1)
        err = circular_error(top[:, 0], hour)
        dest = res.metrics if who == "model" else res.baselines[who]
        # main figures on random-policy sends: their hour was drawn uniformly, so the hours
        # of the opened ones follow P(open | hour); the rule policy always sent at 10:00
        dest["top1_hit_rate"] = float(hit1[rnd].mean()) if rnd.any() else float("nan")
        dest["top3_hit_rate"] = float(hit3[rnd].mean()) if rnd.any() else float("nan")
        dest["hour_mae"] = float(err[rnd].mean()) if rnd.any() else float("nan")
        dest["top1_hit_rate_all_policies"] = float(hit1.mean())
        dest["top3_hit_rate_all_policies"] = float(hit3.mean())
        dest["hour_mae_all_policies"] = float(err.mean())
        for name, mask in (("_new", new & rnd), ("_established", ~new & rnd)):
            dest[f"top3_hit_rate{name}"] = float(hit3[mask].mean()) if mask.any() else float("nan")
    # probability metrics on all delivered test rows, vs the train open rate by local hour
    p_te = _predict(model, d.x[te])
    base_te = by_hour.to_numpy(dtype=np.float64)[d.meta[te]["local_hour"].to_numpy(dtype=np.int64)]
    res.metrics["logloss"] = logloss(d.y[te], p_te)
    res.metrics["auc"] = auc(d.y[te], p_te)
    res.metrics["ece"] = ece(d.y[te], p_te)
    pop = res.baselines["population_best_hour"]
    pop["logloss"] = logloss(d.y[te], base_te)
    pop["auc"] = auc(d.y[te], base_te)
    pop["ece"] = ece(d.y[te], base_te)
    res.metrics["test_rows"] = float(n)
    if world is None:  # no ground truth (real data): observable metrics only
        return res

    # regret: best local hour on the message's channel
    rows = _first_per_customer(d, te, REGRET_CUSTOMERS, seed)
    raw_r = {k: v[rows] for k, v in d.raw.items()}
    meta_r = d.meta.iloc[rows]
    m = len(rows)
    sc = _send_time_scores(model, raw_r, meta_r["now_day"].to_numpy(), ds.spec)
    widx = world.index_of(meta_r["customer_id"].to_numpy())
    ch = channel_index(meta_r["channel"], ds.spec)
    truth = world.p_open(
        np.repeat(widx, 24), np.repeat(ch, 24), np.tile(np.arange(24.0), m)
    ).reshape(m, 24)
    share_r = _act_share(raw_r)
    has_r = np.nansum(share_r, axis=1) > 0
    own_r = np.where(
        has_r[:, None], np.where(np.isnan(share_r), -1.0, share_r), by_hour.to_numpy()[None, :]
    )
    best = truth.max(axis=1)
    for who, s in (
        ("model", sc),
        ("population_best_hour", np.broadcast_to(by_hour.to_numpy(), (m, 24))),
        ("customer_top_hour", own_r),
    ):
        pick = s.argmax(axis=1)
        regret = float(np.mean(best - truth[np.arange(m), pick]))
        dest = res.metrics if who == "model" else res.baselines[who]
        dest["regret_open"] = regret
        dest["regret_open_relative"] = regret / max(float(best.mean()), EPS)
    return res


def evaluate_channel(ds: Dataset, model: Any, world: Any, seed: int = 42) -> EvalResult:
    from training.datasets.world import P_DELIVER

    d = ds.models["channel"]
    tr, te = d.train, d.test
    spec = ds.spec
    n_ch = len(spec.channels)
    tm = d.meta[tr]
    by_ch = (
        pd.Series(d.y[tr]).groupby(tm["channel"].to_numpy()).mean().reindex(list(spec.channels))
    ).fillna(0.0)
    rate = by_ch.to_numpy(dtype=np.float64)
    p_te = _predict(model, d.x[te])
    base_te = rate[channel_index(d.meta[te]["channel"], spec)]
    res = EvalResult("channel", {}, {"most_used_channel": {}})
    res.metrics["logloss"] = logloss(d.y[te], p_te)
    res.metrics["auc"] = auc(d.y[te], p_te)
    res.metrics["ece"] = ece(d.y[te], p_te)
    res.baselines["most_used_channel"]["logloss"] = logloss(d.y[te], base_te)
    res.baselines["most_used_channel"]["auc"] = auc(d.y[te], base_te)
    res.baselines["most_used_channel"]["ece"] = ece(d.y[te], base_te)

    def scores(raw: dict[str, F64], now: F64) -> F64:
        n = len(now)
        cust = np.repeat(np.arange(n), n_ch)
        chs = np.tile(np.arange(n_ch), n)
        return _predict(model, channel_matrix(spec, raw, now, cust, chs)).reshape(n, n_ch)

    def most_used(raw: dict[str, F64]) -> F64:
        sent = np.stack([raw[f"sent_{c}"] for c in spec.channels], axis=1)
        sent = np.nan_to_num(sent, nan=0.0)
        out: F64 = sent + 1e-3 * rate[None, :]  # ties -> population open rate
        return out

    def consent(raw: dict[str, F64]) -> npt.NDArray[np.bool_]:
        c = np.stack([raw[f"consent_{ch}"] for ch in spec.channels], axis=1) == 1
        out: npt.NDArray[np.bool_] = c & ~(raw["opted_out"] == 1)[:, None]
        return out

    sel = te & (d.y == 1)
    raw = d.subset_raw(sel)
    actual = channel_index(d.meta[sel]["channel"], spec)
    sc = scores(raw, d.meta[sel]["now_day"].to_numpy())
    allowed = consent(raw)
    new = _lifecycle_new(raw)
    rnd = _random_sends(d.meta[sel]["policy"])
    for who, s in (("model", sc), ("most_used_channel", most_used(raw))):
        dest = res.metrics if who == "model" else res.baselines[who]
        hit = s.argmax(axis=1) == actual
        hit_in = np.where(allowed, s, -np.inf).argmax(axis=1) == actual
        # main figures on random-policy sends (channel drawn among the consented ones); the
        # rule policy always used email where allowed
        dest["top1_accuracy"] = float(hit[rnd].mean()) if rnd.any() else float("nan")
        dest["top1_accuracy_opted_in"] = float(hit_in[rnd].mean()) if rnd.any() else float("nan")
        dest["top1_accuracy_opted_in_all_policies"] = float(hit_in.mean())
        for name, mask in (("_new", new & rnd), ("_established", ~new & rnd)):
            dest[f"top1_accuracy_opted_in{name}"] = (
                float(hit_in[mask].mean()) if mask.any() else float("nan")
            )
    res.metrics["test_rows"] = float(len(actual))
    if world is None:  # no ground truth (real data): observable metrics only
        return res

    # regret: best consented channel at the message's local hour (true P(deliver) * P(open))
    rows = _first_per_customer(d, te, REGRET_CUSTOMERS, seed)
    raw_r = {k: v[rows] for k, v in d.raw.items()}
    meta_r = d.meta.iloc[rows]
    m = len(rows)
    widx = world.index_of(meta_r["customer_id"].to_numpy())
    hours = meta_r["local_hour"].to_numpy(dtype=np.float64)
    chs = np.tile(np.arange(n_ch), m)
    truth = (
        P_DELIVER[chs] * world.p_open(np.repeat(widx, n_ch), chs, np.repeat(hours, n_ch))
    ).reshape(m, n_ch)
    ok = world.consent[widx] & ~world.opted_out[widx][:, None]
    truth = np.where(ok, truth, -np.inf)
    best = truth.max(axis=1)
    have = np.isfinite(best)
    allowed_r = consent(raw_r)
    for who, s in (
        ("model", scores(raw_r, meta_r["now_day"].to_numpy())),
        ("most_used_channel", most_used(raw_r)),
    ):
        pick = np.where(allowed_r, s, -np.inf).argmax(axis=1)
        regret = float(np.mean((best - truth[np.arange(m), pick])[have]))
        dest = res.metrics if who == "model" else res.baselines[who]
        dest["regret_open"] = regret
        dest["regret_open_relative"] = regret / max(float(best[have].mean()), EPS)
    return res


def importance_plot(model: Any, out: Path, title: str, top: int = 20) -> Path:
    """Gain importance of the booster's features (the ``top`` largest)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    booster = model.booster_
    gain = booster.feature_importance(importance_type="gain")
    names = np.asarray(booster.feature_name())
    order = np.argsort(gain)[::-1][:top][::-1]
    fig, ax = plt.subplots(figsize=(6, 0.28 * len(order) + 1.2))
    ax.barh(names[order], gain[order] / max(float(gain.sum()), EPS))
    ax.set_xlabel("share of total gain")
    ax.set_title(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def hour_plot(ds: Dataset, model: Any, out: Path) -> Path:
    """Local hour: what the model would pick (argmax) vs when test messages were opened."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = ds.models["send_time"]
    sel = d.test & (d.y == 1)
    picked = _send_time_scores(model, d.subset_raw(sel), d.meta[sel]["now_day"].to_numpy(), ds.spec)
    best = np.bincount(picked.argmax(axis=1), minlength=24) / max(int(sel.sum()), 1)
    counts = np.bincount(d.meta[sel]["local_hour"].to_numpy(dtype=np.int64), minlength=24)
    opened = counts / max(int(counts.sum()), 1)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    hours = np.arange(24)
    ax.bar(hours - 0.2, opened, width=0.4, label="opened (test messages)")
    ax.bar(hours + 0.2, best, width=0.4, label="model's best hour")
    ax.set_xlabel("local hour")
    ax.set_ylabel("share")
    ax.set_xticks(hours)
    ax.legend()
    ax.set_title("send time: opened hours vs chosen hours (test period)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def evaluate_all(
    ds: Dataset, models: dict[str, Any], world: Any, plot_dir: Path, seed: int = 42
) -> dict[str, EvalResult]:
    out = {
        "propensity": evaluate_propensity(ds, models["propensity"], world, plot_dir, seed),
        "send_time": evaluate_send_time(ds, models["send_time"], world, seed),
        "channel": evaluate_channel(ds, models["channel"], world, seed),
    }
    for kind, res in out.items():
        res.plots["importance"] = importance_plot(
            models[kind], plot_dir / f"{kind}_importance.png", f"{kind}: feature importance"
        )
    out["send_time"].plots["hours"] = hour_plot(
        ds, models["send_time"], plot_dir / "send_time_hours.png"
    )
    return out


def same_rows_metrics(ds: Dataset, kind: str, model: Any, seed: int = 42) -> dict[str, float]:
    """The held-out metrics of ``model`` (e.g. a :class:`Scorer` of the champion) on the test
    rows of ``ds`` for ``kind``, computed by the same functions as the candidate's: no ground
    truth, plot or off-policy value, so the model scores the test rows only."""
    if kind == "propensity":
        res = evaluate_propensity(ds, model, None, None, seed, ope=False)
    elif kind == "send_time":
        res = evaluate_send_time(ds, model, None, seed)
    elif kind == "channel":
        res = evaluate_channel(ds, model, None, seed)
    else:
        raise ValueError(f"unknown model {kind!r}")
    return {k: v for k, v in res.metrics.items() if k != "test_rows"}


def format_table(results: dict[str, EvalResult]) -> str:
    """A plain-text table: one line per metric, model then each baseline."""
    lines = []
    head = f"{'model':<11} {'metric':<38} {'model':>9}  baselines"
    lines.append(head)
    lines.append("-" * 100)
    for kind, r in results.items():
        for key, v in r.metrics.items():
            if key in ("test_rows", "regret_customers"):
                continue
            bases = [f"{b}={m[key]:.4f}" for b, m in r.baselines.items() if key in m]
            lines.append(f"{kind:<11} {key:<38} {v:>9.4f}  {'  '.join(bases)}")
        lines.append(f"{kind:<11} {'(test rows)':<38} {int(r.metrics.get('test_rows', 0)):>9,}")
    return "\n".join(lines)
