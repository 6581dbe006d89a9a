"""The estimators, their intervals and effective sample sizes (pure numpy).

Every estimator works on per-row vectors of the log: the reward ``r_i``, the logging
propensity ``mu_i`` of the logged action, the candidate's probability of that action
``pi_i`` (so ``w_i = pi_i / mu_i``), and for the model-based ones the reward model's
prediction for the logged action ``q_i = q(x_i, a_i)`` and the candidate's expected
predicted reward ``dm_i = sum_a pi(a | x_i) q(x_i, a)`` (see :class:`LoggedData`).

| method | value | notes |
|---|---|---|
| ``IPS`` | ``mean(w r)`` | unbiased where ``mu > 0`` wherever ``pi > 0`` |
| ``SNIPS`` | ``sum(w r) / sum(w)`` | self-normalised: small bias, lower variance |
| ``IPS-clip`` | ``mean(min(w, tau) r)`` | clipped weights, ``tau`` tuned by SLOPE |
| ``DM`` | ``mean(dm)`` | only as good as the reward model (biased when it is) |
| ``DR`` | ``mean(dm + w (r - q))`` | unbiased if the propensities are right |
| ``SNDR`` | ``mean(dm) + sum(w (r - q)) / sum(w)`` | self-normalised DR |
| ``DR-clip`` | ``mean(dm + min(w, tau) (r - q))`` | ``tau`` tuned by SLOPE |
| ``Switch-DR`` | ``mean(dm + w [w <= tau] (r - q))`` | DM where the weight exceeds ``tau`` (SLOPE) |
| ``DR-OS`` | ``mean(dm + w lam / (w^2 + lam) (r - q))`` | optimistic shrinkage, ``lam`` by SLOPE |

**Tuning (SLOPE).** Clipping, switching and shrinkage trade variance for bias through one
parameter. Their candidates are ordered from the least biased (no clipping: plain IPS or
DR) to the most; each gets the interval ``value +- 2 z se``; the chosen parameter is the
last one whose interval still intersects those of every less biased candidate (Su, Srinath
and Krishnamurthy 2020, "Adaptive estimator selection for off-policy evaluation", as in the
Open Bandit Pipeline). The grid: no clipping, then the 99, 95, 90, 80, 70 and 50 %
quantiles of the positive weights (``tau``) or of their squares (``lam``). The interval of a
tuned estimator treats the chosen parameter as fixed.

**Intervals.** CLT on the per-row terms (``value +- z sd / sqrt(n)``; for the
self-normalised ones the linearised terms), and with ``n_boot > 0`` a percentile bootstrap
over rows (the reward model is held fixed; DM's bootstrap can refit it, see
:mod:`training.measurement.ope.frame`). Both are clipped to the reward's range
(``reward_range``, e.g. ``(0, 1)`` for clicks or conversions): a rate cannot be negative.
``Estimate.low/high`` is the bootstrap interval when one was computed, else the CLT one;
``clt_low/clt_high`` and ``boot_low/boot_high`` are both kept.

**ESS.** Kish's effective sample size ``(sum v)^2 / sum v^2`` of the weights ``v`` the
estimator actually applies (clipped, switched or shrunk; ``n`` for DM): how many logged rows
the estimate is really worth.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "ALL_METHODS",
    "LEGACY_METHODS",
    "MIN_EFFECTIVE_EVENTS",
    "Estimate",
    "LoggedData",
    "bootstrap_counts",
    "clip_interval",
    "direct_method",
    "doubly_robust",
    "dr_terms",
    "effective_sample_size",
    "estimate",
    "evaluate",
    "ips",
    "paired_difference",
    "reward_range_of",
    "slope_select",
    "snips",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: every estimator, in the order they are reported
ALL_METHODS: tuple[str, ...] = (
    "IPS",
    "SNIPS",
    "IPS-clip",
    "DM",
    "DR",
    "SNDR",
    "DR-clip",
    "Switch-DR",
    "DR-OS",
)
#: what :func:`evaluate` returns by default (the original four)
LEGACY_METHODS: tuple[str, ...] = ("IPS", "SNIPS", "DM", "DR")
_MODEL_BASED = frozenset({"DM", "DR", "SNDR", "DR-clip", "Switch-DR", "DR-OS"})

#: below this many effective rows *with a non-zero reward* the normal (CLT) interval of an
#: importance-weighted estimate is not trustworthy: a handful of heavily weighted rows
#: decide the estimate (see ``evaluate_frame``'s ``ess_events``)
MIN_EFFECTIVE_EVENTS = 30.0

#: quantiles of the positive weights that make the clipping / shrinkage grid
_GRID_QUANTILES = (0.99, 0.95, 0.9, 0.8, 0.7, 0.5)

NAN = float("nan")


@dataclass(frozen=True)
class Estimate:
    method: str
    value: float
    se: float
    low: float  # the reported interval: bootstrap when computed, else CLT
    high: float
    n: int
    ess: float
    clt_low: float = NAN
    clt_high: float = NAN
    boot_low: float = NAN
    boot_high: float = NAN
    param: str = ""  # the tuned parameter (tau=..., lam=...), "" if none

    def contains(self, truth: float) -> bool:
        return self.low <= truth <= self.high

    def as_row(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "value": self.value,
            "se": self.se,
            "low": self.low,
            "high": self.high,
            "clt_low": self.clt_low,
            "clt_high": self.clt_high,
            "boot_low": self.boot_low,
            "boot_high": self.boot_high,
            "param": self.param,
            "n": self.n,
            "ess": self.ess,
        }


@dataclass(frozen=True)
class LoggedData:
    """The per-row vectors every estimator needs (see the module doc).

    ``q_logged`` and ``dm`` are None without a reward model (then only IPS, SNIPS and
    IPS-clip can be computed)."""

    reward: F64
    propensity: F64
    target: F64  # pi(logged action | x)
    q_logged: F64 | None = None
    dm: F64 | None = None
    w: F64 = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "w", _weights(self.propensity, self.target))

    @property
    def n(self) -> int:
        return len(self.reward)


def _z(alpha: float) -> float:
    from scipy import stats

    return float(stats.norm.ppf(1 - alpha / 2))


def effective_sample_size(w: F64) -> float:
    s2 = float(np.sum(w**2))
    return float(np.sum(w)) ** 2 / s2 if s2 > 0 else 0.0


def _weights(propensity: F64, target: F64) -> F64:
    propensity = np.asarray(propensity, dtype=np.float64)
    if np.any(~(propensity > 0)) or np.any(propensity > 1):
        bad = np.flatnonzero(~((propensity > 0) & (propensity <= 1)))
        raise ValueError(
            f"logging propensities must be in (0, 1]: {len(bad)} rows are not "
            f"(first rows {bad[:5].tolist()})"
        )
    out: F64 = np.asarray(target, dtype=np.float64) / propensity
    return out


def reward_range_of(reward: F64) -> tuple[float, float]:
    """The range a policy value can take: [0, 1] for 0/1 rewards, else [min(0, min r), max r]."""
    r = np.asarray(reward, dtype=np.float64)
    if len(r) == 0:
        return (-math.inf, math.inf)
    if bool(np.isin(r, (0.0, 1.0)).all()):
        return (0.0, 1.0)
    return (min(0.0, float(r.min())), float(r.max()))


def clip_interval(
    low: float, high: float, reward_range: tuple[float, float] | None
) -> tuple[float, float]:
    if reward_range is None:
        return low, high
    lo, hi = reward_range
    return float(np.clip(low, lo, hi)), float(np.clip(high, lo, hi))


def bootstrap_counts(n: int, n_boot: int, seed: int) -> F64:
    """(n_boot, n) multinomial counts of a row bootstrap: resample b's mean of ``t`` is
    ``counts[b] @ t / n``. One matrix serves every estimator (same resamples)."""
    rng = np.random.default_rng(seed)
    out: F64 = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)
    return out


#: resamples x rows of one block of bootstrap counts (memory: 8 bytes each)
_BLOCK_CELLS = 4_000_000


def _boot_draws(boot: Callable[[F64], F64], n: int, n_boot: int, seed: int) -> F64:
    """``boot`` over ``n_boot`` row resamples, in blocks that bound the memory. The same
    ``seed`` gives the same resamples, so every estimator sees the same ones."""
    rng = np.random.default_rng(seed)
    block = max(1, min(n_boot, _BLOCK_CELLS // max(n, 1)))
    p = np.full(n, 1.0 / n)
    out = []
    done = 0
    while done < n_boot:
        b = min(block, n_boot - done)
        counts = rng.multinomial(n, p, size=b).astype(np.float64)  # = bootstrap_counts' rows
        out.append(boot(counts))
        done += b
    return np.concatenate(out)


@dataclass(frozen=True)
class _Fit:
    """One estimator on one log: value, per-row CLT terms, applied weights, a bootstrap."""

    method: str
    value: float
    terms: F64  # per-row influence terms: their sd / sqrt(n) is the se
    weights: F64  # the weights the estimator applies (for the ESS)
    boot: Callable[[F64], F64]  # counts (B, n) -> B resampled values
    param: str = ""

    @property
    def se(self) -> float:
        n = len(self.terms)
        return float(np.std(self.terms, ddof=1) / math.sqrt(n)) if n > 1 else NAN


def _linear(method: str, terms: F64, weights: F64, param: str = "") -> _Fit:
    n = len(terms)
    return _Fit(method, float(np.mean(terms)), terms, weights, lambda c: (c @ terms) / n, param)


def _ips(d: LoggedData, w: F64, method: str = "IPS", param: str = "") -> _Fit:
    return _linear(method, w * d.reward, w, param)


def _snips(d: LoggedData) -> _Fit:
    w, r = d.w, d.reward
    sw = float(np.sum(w))
    if sw == 0:
        nan_terms = np.full(d.n, NAN)
        return _Fit("SNIPS", NAN, nan_terms, w, lambda c: np.full(len(c), NAN))
    value = float(np.sum(w * r) / sw)
    terms = w * (r - value) / np.mean(w)  # linearisation (delta method)
    wr = w * r

    def boot(c: F64) -> F64:
        den = c @ w
        out: F64 = np.where(den > 0, (c @ wr) / np.where(den > 0, den, 1.0), value)
        return out

    return _Fit("SNIPS", value, terms, w, boot)


def _dr(d: LoggedData, v: F64, method: str = "DR", param: str = "") -> _Fit:
    assert d.q_logged is not None and d.dm is not None
    return _linear(method, d.dm + v * (d.reward - d.q_logged), v, param)


def _sndr(d: LoggedData) -> _Fit:
    assert d.q_logged is not None and d.dm is not None
    w, e, dm = d.w, d.reward - d.q_logged, d.dm
    sw = float(np.sum(w))
    base = float(np.mean(dm))
    if sw == 0:
        return _linear("SNDR", dm, np.ones(d.n))
    corr = float(np.sum(w * e) / sw)
    terms = dm + w * (e - corr) / np.mean(w)  # linearised; its mean is mean(dm)
    we, n = w * e, d.n

    def boot(c: F64) -> F64:
        den = c @ w
        out: F64 = (c @ dm) / n + np.where(den > 0, (c @ we) / np.where(den > 0, den, 1.0), 0)
        return out

    return _Fit("SNDR", base + corr, terms, w, boot)


def _dm(d: LoggedData) -> _Fit:
    assert d.dm is not None
    return _linear("DM", d.dm, np.ones(d.n))


def slope_select(values: Sequence[float], ses: Sequence[float], z: float) -> int:
    """SLOPE: index of the chosen candidate, candidates ordered from the least biased.

    Candidate ``k`` has the interval ``values[k] +- 2 z ses[k]``; the choice is the last
    ``k`` whose interval intersects the intervals of all candidates before it."""
    lo, hi = -math.inf, math.inf
    chosen = 0
    for k, (v, s) in enumerate(zip(values, ses, strict=True)):
        if not (math.isfinite(v) and math.isfinite(s)):
            break
        lo, hi = max(lo, v - 2 * z * s), min(hi, v + 2 * z * s)
        if lo > hi:
            break
        chosen = k
    return chosen


def _grid(w: F64, squared: bool = False) -> list[float]:
    """Clipping thresholds (or shrinkage lambdas), least biased (inf: none) first."""
    pos = w[w > 0]
    if len(pos) == 0:
        return [math.inf]
    qs = np.quantile(pos**2 if squared else pos, _GRID_QUANTILES)
    top = float(np.max(pos**2 if squared else pos))
    out = [math.inf]
    for q in sorted({float(x) for x in qs}, reverse=True):
        if q < top and q > 0:
            out.append(q)
    return out


def _tuned(d: LoggedData, kind: str, z: float) -> _Fit:
    """IPS-clip, DR-clip, Switch-DR or DR-OS with its parameter chosen by SLOPE."""
    w = d.w
    fits: list[_Fit] = []
    for t in _grid(w, squared=kind == "DR-OS"):
        if kind == "DR-OS":
            v = w if math.isinf(t) else w * t / (w**2 + t)
            name = "lam"
        elif kind == "Switch-DR":
            v = w if math.isinf(t) else np.where(w <= t, w, 0.0)
            name = "tau"
        else:
            v = np.minimum(w, t)
            name = "tau"
        param = f"{name}={t:.4g}"
        fit = _ips(d, v, kind, param) if kind == "IPS-clip" else _dr(d, v, kind, param)
        fits.append(fit)
    k = slope_select([f.value for f in fits], [f.se for f in fits], z)
    return fits[k]


def _fit(d: LoggedData, method: str, z: float) -> _Fit:
    if method == "IPS":
        return _ips(d, d.w)
    if method == "SNIPS":
        return _snips(d)
    if method == "DM":
        return _dm(d)
    if method == "DR":
        return _dr(d, d.w)
    if method == "SNDR":
        return _sndr(d)
    if method in ("IPS-clip", "DR-clip", "Switch-DR", "DR-OS"):
        return _tuned(d, method, z)
    raise ValueError(f"unknown estimator {method!r}: one of {', '.join(ALL_METHODS)}")


def estimate(
    d: LoggedData,
    methods: Sequence[str] = ALL_METHODS,
    alpha: float = 0.05,
    n_boot: int = 0,
    seed: int = 0,
    reward_range: tuple[float, float] | None = None,
    counts: F64 | None = None,
    dm_boot: F64 | None = None,
) -> list[Estimate]:
    """Every estimator of ``methods`` on one log (model-based ones skipped without a model).

    ``counts``: a bootstrap count matrix (:func:`bootstrap_counts`); else ``n_boot``
    resamples are drawn from ``seed`` in memory-bounded blocks (the same for every
    estimator). ``dm_boot``: resampled DM values from
    refitted reward models, used for DM's bootstrap interval (``value +- z sd``) instead of
    the row bootstrap that holds the model fixed."""
    z = _z(alpha)
    out = []
    for m in methods:
        if m in _MODEL_BASED and d.dm is None:
            continue
        f = _fit(d, m, z)
        se = f.se
        clt = clip_interval(f.value - z * se, f.value + z * se, reward_range)
        boot = (NAN, NAN)
        if m == "DM" and dm_boot is not None and len(dm_boot) > 1:
            s = float(np.std(dm_boot, ddof=1))
            boot = clip_interval(f.value - z * s, f.value + z * s, reward_range)
        elif (counts is not None and len(counts)) or n_boot > 0:
            draws = f.boot(counts) if counts is not None else _boot_draws(f.boot, d.n, n_boot, seed)
            draws = draws[np.isfinite(draws)]
            if len(draws):
                lo, hi = np.quantile(draws, [alpha / 2, 1 - alpha / 2])
                boot = clip_interval(float(lo), float(hi), reward_range)
        has_boot = not math.isnan(boot[0])
        out.append(
            Estimate(
                method=m,
                value=f.value,
                se=se,
                low=boot[0] if has_boot else clt[0],
                high=boot[1] if has_boot else clt[1],
                n=d.n,
                ess=effective_sample_size(f.weights),
                clt_low=clt[0],
                clt_high=clt[1],
                boot_low=boot[0],
                boot_high=boot[1],
                param=f.param,
            )
        )
    return out


# ------------------------------------------------------------- the original array interface


def _one(
    method: str,
    d: LoggedData,
    alpha: float,
    n_boot: int,
    seed: int,
) -> Estimate:
    (e,) = estimate(d, (method,), alpha, n_boot, seed)
    return e


def ips(
    reward: F64,
    propensity: F64,
    target: F64,
    alpha: float = 0.05,
    n_boot: int = 0,
    seed: int = 0,
) -> Estimate:
    """IPS estimate; ``target`` = pi(logged action | x) under the candidate policy."""
    return _one("IPS", LoggedData(reward, propensity, target), alpha, n_boot, seed)


def snips(
    reward: F64,
    propensity: F64,
    target: F64,
    alpha: float = 0.05,
    n_boot: int = 0,
    seed: int = 0,
) -> Estimate:
    return _one("SNIPS", LoggedData(reward, propensity, target), alpha, n_boot, seed)


def direct_method(q_hat: F64, pi: F64, alpha: float = 0.05) -> Estimate:
    dm = np.sum(pi * q_hat, axis=1)
    ones = np.ones(len(dm))
    return _one("DM", LoggedData(ones, ones, ones, dm, dm), alpha, 0, 0)


def dr_terms(reward: F64, propensity: F64, action: I64, pi: F64, q_hat: F64) -> F64:
    """Per-row doubly robust terms (their mean is the DR estimate). Two policies evaluated on
    the same rows can be compared by the mean of the difference of their terms (paired)."""
    rows = np.arange(len(action))
    w = _weights(propensity, pi[rows, action])
    out: F64 = np.sum(pi * q_hat, axis=1) + w * (reward - q_hat[rows, action])
    return out


def paired_difference(terms_a: F64, terms_b: F64, alpha: float = 0.05) -> Estimate:
    """Mean of ``terms_a - terms_b`` with a CLT interval (same rows, e.g. two policies' DR
    terms): much tighter than comparing two separate intervals."""
    d = terms_a - terms_b
    n = len(d)
    value = float(np.mean(d))
    se = float(np.std(d, ddof=1) / math.sqrt(n)) if n > 1 else NAN
    z = _z(alpha)
    return Estimate(
        "difference", value, se, value - z * se, value + z * se, n, float(n),
        value - z * se, value + z * se,
    )  # fmt: skip


def _dense(reward: F64, propensity: F64, action: I64, pi: F64, q_hat: F64 | None) -> LoggedData:
    rows = np.arange(len(action))
    target = pi[rows, action]
    if q_hat is None:
        return LoggedData(reward, propensity, target)
    return LoggedData(reward, propensity, target, q_hat[rows, action], np.sum(pi * q_hat, 1))


def doubly_robust(
    reward: F64,
    propensity: F64,
    action: I64,
    pi: F64,
    q_hat: F64,
    alpha: float = 0.05,
    n_boot: int = 0,
    seed: int = 0,
) -> Estimate:
    """DR with ``pi`` (n, K) candidate probabilities and ``q_hat`` (n, K) reward predictions."""
    return _one("DR", _dense(reward, propensity, action, pi, q_hat), alpha, n_boot, seed)


def evaluate(
    reward: F64,
    propensity: F64,
    action: I64,
    pi: F64,
    q_hat: F64 | None = None,
    alpha: float = 0.05,
    n_boot: int = 0,
    seed: int = 0,
    methods: Sequence[str] = LEGACY_METHODS,
    reward_range: tuple[float, float] | None = None,
) -> list[Estimate]:
    """``methods`` (default IPS, SNIPS and, with ``q_hat``, DM and DR) for one candidate
    policy ``pi`` (n, K) with dense reward predictions ``q_hat`` (n, K)."""
    d = _dense(reward, propensity, action, pi, q_hat)
    return estimate(d, methods, alpha, n_boot, seed, reward_range)
