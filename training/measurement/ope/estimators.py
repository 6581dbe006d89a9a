"""The estimators: IPS, SNIPS, DM, DR, their intervals and effective sample sizes (pure numpy)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Estimate:
    method: str
    value: float
    se: float
    low: float
    high: float
    n: int
    ess: float

    def contains(self, truth: float) -> bool:
        return self.low <= truth <= self.high

    def as_row(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "value": self.value,
            "se": self.se,
            "low": self.low,
            "high": self.high,
            "n": self.n,
            "ess": self.ess,
        }


def _z(alpha: float) -> float:
    from scipy import stats

    return float(stats.norm.ppf(1 - alpha / 2))


#: below this many effective rows *with a non-zero reward* the normal (CLT) interval of an
#: importance-weighted estimate is not trustworthy: a handful of heavily weighted rows
#: decide the estimate (see ``evaluate_frame``'s ``ess_events``)
MIN_EFFECTIVE_EVENTS = 30.0


def effective_sample_size(w: F64) -> float:
    s2 = float(np.sum(w**2))
    return float(np.sum(w)) ** 2 / s2 if s2 > 0 else 0.0


def _weights(propensity: F64, target: F64) -> F64:
    if np.any(propensity <= 0) or np.any(propensity > 1):
        raise ValueError("logging propensities must be in (0, 1]")
    out: F64 = np.asarray(target, dtype=np.float64) / np.asarray(propensity, dtype=np.float64)
    return out


def _from_terms(method: str, value: float, terms: F64, w: F64, alpha: float) -> Estimate:
    n = len(terms)
    se = float(np.std(terms, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    z = _z(alpha)
    return Estimate(method, value, se, value - z * se, value + z * se, n, effective_sample_size(w))


def _bootstrap(
    method: str,
    point: float,
    stat: Callable[[I64], float],
    n: int,
    w: F64,
    n_boot: int,
    alpha: float,
    seed: int,
) -> Estimate:
    rng = np.random.default_rng(seed)
    draws = np.array([stat(rng.integers(0, n, n)) for _ in range(n_boot)])
    lo, hi = np.quantile(draws, [alpha / 2, 1 - alpha / 2])
    return Estimate(
        method, point, float(np.std(draws, ddof=1)), float(lo), float(hi), n,
        effective_sample_size(w),
    )  # fmt: skip


def _estimate(
    method: str,
    value: float,
    terms: F64,
    w: F64,
    alpha: float,
    n_boot: int,
    seed: int,
    stat: Callable[[I64], float] | None = None,
) -> Estimate:
    """``value`` with its interval: a percentile bootstrap of ``stat`` (default: the mean of
    ``terms`` over the resampled rows) when ``n_boot`` > 0, else CLT on the per-row ``terms``."""
    if n_boot:
        if stat is None:

            def stat(i: I64) -> float:
                return float(np.mean(terms[i]))

        return _bootstrap(method, value, stat, len(w), w, n_boot, alpha, seed)
    return _from_terms(method, value, terms, w, alpha)


def ips(
    reward: F64,
    propensity: F64,
    target: F64,
    alpha: float = 0.05,
    n_boot: int = 0,
    seed: int = 0,
) -> Estimate:
    """IPS estimate; ``target`` = pi(logged action | x) under the candidate policy."""
    w = _weights(propensity, target)
    terms = w * reward
    return _estimate("IPS", float(np.mean(terms)), terms, w, alpha, n_boot, seed)


def snips(
    reward: F64,
    propensity: F64,
    target: F64,
    alpha: float = 0.05,
    n_boot: int = 0,
    seed: int = 0,
) -> Estimate:
    w = _weights(propensity, target)
    sw = float(np.sum(w))
    if sw == 0:
        nan = float("nan")
        return Estimate("SNIPS", nan, nan, nan, nan, len(w), 0.0)
    value = float(np.sum(w * reward) / sw)

    def stat(i: I64) -> float:
        s = float(np.sum(w[i]))
        return float(np.sum(w[i] * reward[i]) / s) if s > 0 else value

    terms = w * (reward - value) / np.mean(w)  # linearisation (delta method)
    return _estimate("SNIPS", value, terms, w, alpha, n_boot, seed, stat)


def direct_method(q_hat: F64, pi: F64, alpha: float = 0.05) -> Estimate:
    terms = np.sum(pi * q_hat, axis=1)
    return _from_terms("DM", float(np.mean(terms)), terms, np.ones(len(terms)), alpha)


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
    return _from_terms("difference", float(np.mean(d)), d, np.ones(len(d)), alpha)


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
    rows = np.arange(len(action))
    w = _weights(propensity, pi[rows, action])
    terms = dr_terms(reward, propensity, action, pi, q_hat)
    return _estimate("DR", float(np.mean(terms)), terms, w, alpha, n_boot, seed)


def evaluate(
    reward: F64,
    propensity: F64,
    action: I64,
    pi: F64,
    q_hat: F64 | None = None,
    alpha: float = 0.05,
    n_boot: int = 0,
    seed: int = 0,
) -> list[Estimate]:
    """IPS, SNIPS and (with ``q_hat``) DM and DR for one candidate policy ``pi`` (n, K)."""
    target = pi[np.arange(len(action)), action]
    out = [
        ips(reward, propensity, target, alpha, n_boot, seed),
        snips(reward, propensity, target, alpha, n_boot, seed),
    ]
    if q_hat is not None:
        out.append(direct_method(q_hat, pi, alpha))
        out.append(doubly_robust(reward, propensity, action, pi, q_hat, alpha, n_boot, seed))
    return out
