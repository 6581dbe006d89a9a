"""What the history can show: the best a policy could do that must *infer* each customer's
channel response from their past messages.

The oracle knows every customer's response to every channel. No data show it for a channel a
customer was never sent, and one or two past sends on a channel say little. This module gives
the Bayes-optimal channel choice under the world's **true** prior (a favourite channel drawn
uniformly, ``+FAV_LIFT`` logits, every channel's response ``Normal(0, RESP_SD)`` around that) given
every delivered past message of the customer (channel, local hour, opened), with the customer's
true hour peak. Combined with the oracle that knows every other trait exactly (category
affinities, price sensitivity, lifecycle, hour peak; not the per-offer noise), it is an upper
bound for any policy that learns from the same history: a learned policy has to infer those
traits too, and its prior is not the truth's.

The integral over each channel's response is Gauss-Hermite quadrature; the favourite channel
is summed out exactly.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from training.datasets.world import CHANNEL_BASE_LOGIT, CHANNELS, HOUR_KAPPA, P_DELIVER, World
from training.simulation.policies import restricted_oracle
from training.simulation.scoring import allowed_channels

__all__ = ["ChannelPosterior", "channel_posterior", "history_ceiling", "load_history"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

# the world's prior of channel responses (world._make_world): these are the generator's, read
# here, not tuned; a test checks them against a generated world's traits
FAV_LIFT = 1.3
RESP_SD = 0.6
_NODES = 16


@dataclass(frozen=True)
class ChannelPosterior:
    """Per customer of a sample: the likelihood of their history at each quadrature node."""

    cust: I64  # world indices, in the sample's order
    fav: F64  # (n, C) P(favourite channel = c | history)
    weight: F64  # (2, K, n, C) posterior weight of node k, given not-favourite (0) / favourite (1)

    def p_open(self, world: World, hour: float) -> F64:
        """E[P(opened | delivered) on each channel at local ``hour`` | history]: (n, C)."""
        z, _ = _nodes()
        hs = HOUR_KAPPA * np.cos(2 * np.pi * (hour - world.hour_peak[self.cust]) / 24.0)
        out = np.zeros_like(self.fav)
        for a, mu in enumerate((0.0, FAV_LIFT)):
            x = CHANNEL_BASE_LOGIT[None, None, :] + mu + RESP_SD * z[:, None, None]
            p = 1.0 / (1.0 + np.exp(-(x + hs[None, :, None])))
            e = np.einsum("kic,kic->ic", self.weight[a], p)
            out += (self.fav if a == 1 else 1.0 - self.fav) * e
        return out


def _nodes() -> tuple[F64, F64]:
    z, w = np.polynomial.hermite_e.hermegauss(_NODES)
    return z, w / w.sum()


def load_history(data_dir: Path) -> pd.DataFrame | None:
    """The world's past messages (``raw/`` after ingest, else ``source/``), or None."""
    from contracts.tables import layout

    where = layout(data_dir)
    for p in (where.raw_table("messages"), where.source / "messages.parquet"):
        if p.exists():
            cols = ["customer_id", "channel", "local_hour", "delivered", "opened"]
            return pd.read_parquet(p, columns=cols)
    return None


def channel_posterior(world: World, cust: I64, messages: pd.DataFrame) -> ChannelPosterior:
    """The posterior of each sampled customer's channel responses given ``messages``."""
    n, n_ch = len(cust), len(CHANNELS)
    pos = {int(c): i for i, c in enumerate(cust)}
    idx = world.index_of(messages["customer_id"].to_numpy())
    keep = np.isin(idx, cust) & messages["delivered"].to_numpy(dtype=bool)
    row = np.array([pos[int(c)] for c in idx[keep]], dtype=np.int64)
    ch_index = {c: i for i, c in enumerate(CHANNELS)}
    ch = messages["channel"].to_numpy()[keep]
    chi = np.array([ch_index[str(c)] for c in ch], dtype=np.int64)
    hour = messages["local_hour"].to_numpy(dtype=np.float64)[keep]
    opened = messages["opened"].to_numpy(dtype=bool)[keep]
    hs = HOUR_KAPPA * np.cos(2 * np.pi * (hour - world.hour_peak[cust[row]]) / 24.0)
    z, wz = _nodes()
    loglik = np.zeros((2, _NODES, n, n_ch))
    for a, mu in enumerate((0.0, FAV_LIFT)):
        for k, zk in enumerate(z):
            p = 1.0 / (1.0 + np.exp(-(CHANNEL_BASE_LOGIT[chi] + mu + RESP_SD * zk + hs)))
            np.add.at(loglik[a, k], (row, chi), np.where(opened, np.log(p), np.log1p(-p)))
    lik = wz[None, :, None, None] * np.exp(loglik)
    evidence = lik.sum(axis=1)  # (2, n, C)
    log_ev = np.log(evidence)
    # P(fav = f | D) ∝ Z1_f * prod_{c != f} Z0_c
    lf = log_ev[1] - log_ev[0]
    fav = np.exp(lf - lf.max(axis=1, keepdims=True))
    fav /= fav.sum(axis=1, keepdims=True)
    return ChannelPosterior(cust=cust, fav=fav, weight=lik / evidence[:, None])


def history_ceiling(
    world: World,
    cust: I64,
    offers: I64,
    messages: pd.DataFrame,
    value: str = "margin",
    quiet: npt.NDArray[np.bool_] | None = None,
) -> tuple[I64, I64, F64]:
    """(offer, channel, hour) per customer: every trait known but the per-offer noise and the
    channel responses; channel and hour chosen by the posterior expected delivered-and-opened
    rate (expected value factorises, so the offer does not depend on them)."""
    traits = copy.copy(world)
    traits.offer_noise = np.zeros_like(world.offer_noise)
    offer, _, _ = restricted_oracle(traits, cust, offers, value, quiet)
    post = channel_posterior(world, cust, messages)
    allowed = allowed_channels(world, cust)
    best = np.full(len(cust), -1.0)
    channel = np.full(len(cust), -1, dtype=np.int64)
    hour = np.zeros(len(cust))
    for h in range(24):
        e = post.p_open(world, float(h)) * P_DELIVER[None, :]
        for c in range(len(CHANNELS)):
            if quiet is not None and quiet[c, h]:
                continue
            v = np.where(allowed[:, c], e[:, c], -1.0)
            better = v > best
            best = np.where(better, v, best)
            channel = np.where(better, c, channel)
            hour = np.where(better, float(h), hour)
    offer = np.where(channel >= 0, offer, -1)
    return offer, np.maximum(channel, 0), hour
