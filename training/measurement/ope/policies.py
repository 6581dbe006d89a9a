"""Candidate policies as action distributions: pi(a | x) for every row and action."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd

F64 = npt.NDArray[np.float64]


def policy_matrix(df: pd.DataFrame, actions: Sequence[str], spec: str) -> F64:
    """pi(a | x) for every row and action (n, K) from a policy spec (see module doc)."""
    n, k = len(df), len(actions)
    index = {a: i for i, a in enumerate(actions)}
    pi = np.zeros((n, k))
    kind, _, arg = spec.partition(":")
    if kind == "uniform":
        pi[:] = 1.0 / k
    elif kind == "constant":
        if arg not in index:
            raise ValueError(f"action {arg!r} never appears in the log: {list(actions)[:10]}")
        pi[:, index[arg]] = 1.0
    elif kind == "column":
        chosen = df[arg].astype(str).to_numpy()
        missing = sorted(set(chosen) - set(index))
        if missing:
            raise ValueError(f"column {arg!r} names actions absent from the log: {missing[:5]}")
        pi[np.arange(n), [index[c] for c in chosen]] = 1.0
    elif kind == "probs":
        for a, i in index.items():
            col = f"{arg}{a}"
            if col in df:
                pi[:, i] = df[col].to_numpy(dtype=np.float64)
        s = pi.sum(axis=1)
        if not np.allclose(s, 1.0, atol=1e-6):
            raise ValueError("policy probabilities do not sum to 1 on every row")
    else:
        raise ValueError(f"unknown policy spec {spec!r}")
    return pi
