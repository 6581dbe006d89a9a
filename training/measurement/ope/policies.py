"""Candidate policies as action distributions over the catalogue: pi(a | x) for every row.

The catalogue is every action a policy may take, not only the ones the log happens to hold:
``uniform`` is uniform over the whole catalogue, ``probs:`` columns may name any catalogue
action (a resample that lacks an action still sums to 1). A policy is stored sparsely
(:class:`PolicyDist`: per row, the actions with their probabilities), so a deterministic
policy over a large (offer, channel, hour) catalogue costs one column.

Specs: ``constant:<action>``, ``uniform``, ``column:<col>`` (the candidate's action per row
in column ``col``), ``probs:<prefix>`` (columns ``<prefix><action>`` hold pi(action | x);
a catalogue action without a column has probability 0; every row must sum to 1).

**Support.** Importance weighting can only credit a candidate for actions the logging
policy could take. :func:`support_problems` finds the actions a candidate gives positive
probability that the log never took (or, with logging-probability columns, that had
probability 0 in that row) and :class:`UnsupportedPolicyError` names them and their rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

__all__ = [
    "PolicyDist",
    "UnsupportedPolicyError",
    "catalogue_actions",
    "policy_dist",
    "policy_matrix",
    "support_problems",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: a policy's dense (rows x support) size beyond which ``uniform`` is refused
MAX_CELLS = 30_000_000


class UnsupportedPolicyError(ValueError):
    """A candidate puts probability on actions the logging policy did not take."""


@dataclass(frozen=True)
class PolicyDist:
    """pi(. | x_i) per row: ``probs[i, j]`` on action id ``actions[i, j]`` (0-padded)."""

    actions: I64  # (n, m)
    probs: F64  # (n, m)

    def target(self, logged: I64) -> F64:
        """pi(logged action | x) per row."""
        out: F64 = np.sum(np.where(self.actions == logged[:, None], self.probs, 0.0), axis=1)
        return out

    def take(self, rows: I64) -> PolicyDist:
        return PolicyDist(self.actions[rows], self.probs[rows])

    def pairs(self) -> tuple[I64, I64, F64]:
        """(row, action, probability) of every positive entry."""
        r, j = np.nonzero(self.probs > 0)
        return r.astype(np.int64), self.actions[r, j], self.probs[r, j]

    def dense(self, n_actions: int) -> F64:
        out = np.zeros((len(self.actions), n_actions))
        r, a, p = self.pairs()
        np.add.at(out, (r, a), p)
        return out


def _named_in_probs(df: pd.DataFrame, prefix: str) -> list[str]:
    return [c[len(prefix) :] for c in df.columns if c.startswith(prefix)]


def catalogue_actions(
    df: pd.DataFrame, specs: Sequence[str], catalogue: Sequence[str] | None = None
) -> list[str]:
    """The action list: ``catalogue`` when given (every logged or candidate action must be in
    it), else every action the log took or a candidate names."""
    named: set[str] = set(df["action"].astype(str).unique())
    for spec in specs:
        kind, _, arg = spec.partition(":")
        if kind == "column" and arg in df:
            named |= set(df[arg].astype(str).unique())
        elif kind == "constant":
            named.add(arg)
        elif kind == "probs":
            named |= set(_named_in_probs(df, arg))
    if catalogue is None:
        return sorted(named)
    cat = list(dict.fromkeys(str(a) for a in catalogue))
    outside = sorted(named - set(cat))
    if outside:
        raise ValueError(
            f"{len(outside)} logged or candidate actions are not in the catalogue: {outside[:8]}"
        )
    return cat


def policy_dist(df: pd.DataFrame, actions: Sequence[str], spec: str) -> PolicyDist:
    """The candidate ``spec`` on every row of ``df`` over the catalogue ``actions``."""
    n, k = len(df), len(actions)
    index = {a: i for i, a in enumerate(actions)}
    kind, _, arg = spec.partition(":")
    if kind == "uniform":
        if n * k > MAX_CELLS:
            raise ValueError(
                f"uniform over {k:,} actions on {n:,} rows is too large; evaluate a sample"
            )
        return PolicyDist(np.tile(np.arange(k), (n, 1)), np.full((n, k), 1.0 / k))
    if kind == "constant":
        if arg not in index:
            raise ValueError(f"action {arg!r} is not in the catalogue: {list(actions)[:10]}")
        return PolicyDist(np.full((n, 1), index[arg]), np.ones((n, 1)))
    if kind == "column":
        if arg not in df:
            raise ValueError(f"policy {spec!r}: the log has no column {arg!r}")
        chosen = df[arg].astype(str).to_numpy()
        missing = sorted(set(chosen) - set(index))
        if missing:
            raise ValueError(f"column {arg!r} names actions not in the catalogue: {missing[:5]}")
        ids = np.array([index[c] for c in chosen], dtype=np.int64)
        return PolicyDist(ids[:, None], np.ones((n, 1)))
    if kind == "probs":
        names = [a for a in _named_in_probs(df, arg) if a in index]
        if not names:
            raise ValueError(f"policy {spec!r}: no column {arg}<action> for a catalogue action")
        probs = np.column_stack([df[f"{arg}{a}"].to_numpy(dtype=np.float64) for a in names])
        bad = np.flatnonzero(~np.isfinite(probs).all(axis=1) | (probs < 0).any(axis=1))
        s = probs.sum(axis=1)
        off = np.flatnonzero(~np.isclose(s, 1.0, atol=1e-6))
        if len(bad) or len(off):
            rows = np.union1d(bad, off)
            raise ValueError(
                f"policy {spec!r}: probabilities must be >= 0 and sum to 1 over the catalogue "
                f"on every row; {len(rows)} rows do not (first rows {rows[:5].tolist()}, "
                f"sums {np.round(s[rows[:5]], 4).tolist()})"
            )
        ids = np.array([index[a] for a in names], dtype=np.int64)
        return PolicyDist(np.tile(ids, (n, 1)), probs)
    raise ValueError(f"unknown policy spec {spec!r}")


def policy_matrix(df: pd.DataFrame, actions: Sequence[str], spec: str) -> F64:
    """pi(a | x) for every row and action (n, K) from a policy spec (dense)."""
    return policy_dist(df, actions, spec).dense(len(actions))


def support_problems(
    pol: PolicyDist,
    logged_actions: I64,
    actions: Sequence[str],
    logging_probs: F64 | None = None,
) -> str | None:
    """Why importance weighting cannot fully credit the candidate (None: it can).

    Without ``logging_probs``: actions with positive candidate probability that the log never
    took. With ``logging_probs`` (n, K): the (row, action) pairs with positive candidate
    probability and zero logging probability."""
    r, a, _ = pol.pairs()
    if logging_probs is not None:
        bad = logging_probs[r, a] <= 0
        if not bad.any():
            return None
        rows, acts = np.unique(r[bad]), np.unique(a[bad])
        return (
            f"{len(rows):,} rows give positive probability to actions the logging policy "
            f"could not take there (first rows {rows[:5].tolist()}; actions "
            f"{[actions[i] for i in acts[:6]]})"
        )
    seen = np.zeros(len(actions), dtype=bool)
    seen[logged_actions] = True
    bad = ~seen[a]
    if not bad.any():
        return None
    rows, acts = np.unique(r[bad]), np.unique(a[bad])
    return (
        f"{len(acts)} actions with positive probability were never taken in the log "
        f"({[actions[i] for i in acts[:6]]}), on {len(rows):,} rows (first rows "
        f"{rows[:5].tolist()})"
    )
