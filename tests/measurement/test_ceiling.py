"""The history's ceiling: a channel inferred from past messages under the world's own prior."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from contracts.vocabulary import DEFAULT_CHANNELS as CHANNELS
from training import simulation as simulate
from training.datasets.world import CONSENT_RATE, World
from training.simulation import ceiling
from training.simulation.scoring import score_actions


@pytest.fixture(scope="module")
def world(small_world: Path) -> World:
    return World.load(small_world)


def test_prior_constants_are_the_generators(world: World) -> None:
    """FAV_LIFT and RESP_SD are read off the generator: each customer's best channel response
    sits about FAV_LIFT above the rest, whose spread is RESP_SD."""
    resp = np.sort(world.channel_resp, axis=1)
    rest = resp[:, :-1]
    assert rest.std() == pytest.approx(ceiling.RESP_SD, rel=0.15)
    fav = world.channel_resp.argmax(axis=1)
    others = np.ones_like(world.channel_resp, dtype=bool)
    others[np.arange(len(fav)), fav] = False
    lift = world.channel_resp[~others].mean() - world.channel_resp[others].mean()
    assert 1.2 < lift < 2.2  # FAV_LIFT plus the top order statistic of the noise
    assert len(CONSENT_RATE) == len(CHANNELS)


def _history(world: World, cust: int, channel: str, n: int, opened: bool) -> pd.DataFrame:
    peak = float(world.hour_peak[cust])
    return pd.DataFrame(
        {
            "customer_id": [str(world.customer_ids[cust])] * n,
            "channel": [channel] * n,
            "local_hour": [round(peak) % 24] * n,
            "delivered": [True] * n,
            "opened": [opened] * n,
        }
    )


def test_posterior_follows_the_evidence(world: World) -> None:
    cust = np.array([0, 1, 2], dtype=np.int64)
    empty = _history(world, 0, "email", 0, True)
    none = ceiling.channel_posterior(world, cust, empty)
    assert none.fav == pytest.approx(np.full((3, len(CHANNELS)), 1 / len(CHANNELS)))
    # customer 1 opened push ten times at their best hour, never e-mail
    hist = pd.concat([_history(world, 1, "push", 10, True), _history(world, 1, "email", 10, False)])
    post = ceiling.channel_posterior(world, cust, hist)
    push, email = CHANNELS.index("push"), CHANNELS.index("email")
    assert post.fav[1, push] > 0.9 and post.fav[1, email] < 0.01
    assert post.fav[0] == pytest.approx(none.fav[0])  # other customers untouched
    hour = float(round(world.hour_peak[1]) % 24)
    p = post.p_open(world, hour)
    q = none.p_open(world, hour)
    assert p[1, push] > q[1, push] and p[1, email] < q[1, email]
    assert p[1, push] > p[1, email] and q[1, push] < q[1, email]  # the evidence beats the prior
    assert ((p > 0) & (p < 1)).all()
    # undelivered messages say nothing
    lost = hist.assign(delivered=False)
    assert ceiling.channel_posterior(world, cust, lost).fav[1] == pytest.approx(none.fav[1])


def test_history_ceiling_is_between_prior_and_oracle(world: World, small_world: Path) -> None:
    cust = simulate.sample_customers(world, 600, seed=4)
    at = simulate.decision_time(world)
    offers = simulate.valid_offers(world, at)
    quiet = simulate.quiet_mask()
    history = ceiling.load_history(small_world)
    assert history is not None and len(history) > 0
    o, ch, h = ceiling.history_ceiling(world, cust, offers, history, "margin", quiet)
    act = o >= 0
    assert world.consent[cust[act], ch[act]].all()
    assert not quiet[ch[act], h[act].astype(int)].any()

    def value(oo: np.ndarray, cc: np.ndarray, hh: np.ndarray) -> float:
        return float(score_actions(world, cust, oo, cc, hh).margin.mean())

    traits = copy.copy(world)
    traits.offer_noise = np.zeros_like(world.offer_noise)
    to, tc, th = simulate.restricted_oracle(traits, cust, offers, "margin", quiet)
    no_history = history.iloc[:0]
    po, pc, ph = ceiling.history_ceiling(world, cust, offers, no_history, "margin", quiet)
    known, inferred, prior = value(to, tc, th), value(o, ch, h), value(po, pc, ph)
    assert prior < inferred < known
