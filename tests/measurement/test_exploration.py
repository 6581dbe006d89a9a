"""Exploration arms: the logged choice_probability is the true probability of the action,
every channel and allowed hour can be explored, and the budget caps the value given up.

Pure decision logic with a hand-written scorer (no server): the decision is replayed for a
fine grid of the U(0, 1) draw the engine derives from the decision id, so the empirical
frequency of every (offer, channel, send time) action can be compared with the probability
logged with it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime

import msgspec
import numpy as np
import pytest

from contracts.features import DEFAULT_SPEC
from service.domain.allocation import allocate
from service.domain.config import Arm, PolicyConfig, load_policy
from service.domain.decision import DecisionInput, Offer, Priors, decide

CHANNELS = DEFAULT_SPEC.channels
RAW_FEATURES = DEFAULT_SPEC.raw
PRICE = DEFAULT_SPEC.propensity_features.index("offer_price")

NOW = datetime(2026, 11, 16, 12, 0, tzinfo=UTC).timestamp()
GRID = (np.arange(8000) + 0.5) / 8000  # U(0, 1) quantiles


class Scorer:
    """Propensity grows with the price column; channels differ; the hour matters a little."""

    def propensity(self, x: np.ndarray) -> np.ndarray:
        return 0.05 + x[:, PRICE].astype(np.float64) / 10_000.0

    def send_time(self, x: np.ndarray) -> np.ndarray:
        return 0.1 + 0.2 * np.exp(-((x[:, 10].astype(np.float64) - 7) ** 2) / 4.0)

    def channel(self, x: np.ndarray) -> np.ndarray:
        ch = x[:, 15].astype(np.int64)
        return np.array([0.30, 0.40, 0.10, 0.25, 0.20])[ch]


PRIORS = Priors(
    hour_open_rate=[0.1] * 24,
    best_hour=10,
    channel_open_rate={c: 0.2 for c in CHANNELS},
    channel_order=list(CHANNELS),
    offer_conversion_rate={},
    offer_order=["OFF001", "OFF002", "OFF003", "OFF004"],
)


def _offer(i: int, price: float) -> Offer:
    return Offer(f"OFF{i:03d}", f"Offer {i}", "outdoor", 0, price, 0.5, NOW - 86400, NOW + 86400)


def _features() -> dict[str, np.ndarray]:
    raw = {name: 0.0 for names in RAW_FEATURES.values() for name in names}
    raw.update({f"consent_{c}": 1.0 for c in CHANNELS})
    raw.update(consent_sms=0.0, tz_offset=0.0, lifecycle=1.0, signup_day=20000.0)
    raw.update(views_total=25.0)  # a customer with history (not a cold start)
    return {k: np.array([v]) for k, v in raw.items()}


def _policy(epsilon: float = 0.3, top: int = 0, budget: float | None = None) -> PolicyConfig:
    base = load_policy()
    exp = base.experiments.definitions["nba"]
    arms = [
        msgspec.structs.replace(a, epsilon=epsilon, explore_top=top, explore_budget=budget)
        if a.policy == "explore"
        else a
        for a in exp.arms
    ]
    defs = {**base.experiments.definitions, "nba": msgspec.structs.replace(exp, arms=arms)}
    return msgspec.structs.replace(
        base, experiments=msgspec.structs.replace(base.experiments, definitions=defs)
    )


def _input(policy: PolicyConfig, arm: str, u: float) -> DecisionInput:
    return DecisionInput(
        unit_id="C1",
        known=True,
        features=_features(),
        now=NOW,
        placement="campaign",
        channels=None,
        candidates=[_offer(1, 20.0), _offer(2, 200.0), _offer(3, 100.0), _offer(4, 60.0)],
        allocation=allocate(policy.experiments, "C1", arm=arm),
        contact_history=[],
        uniform=u,
    )


Action = tuple[str, str, float]  # offer, channel, send time


def _replay(policy: PolicyConfig, arm: str) -> tuple[Counter[Action], dict[Action, set[float]]]:
    counts: Counter[Action] = Counter()
    logged: dict[Action, set[float]] = defaultdict(set)
    for u in GRID:
        d = decide(_input(policy, arm, float(u)), policy, Scorer(), PRIORS)
        assert d.action is not None
        key = (d.action.offer.offer_id, d.action.channel, d.action.send_at)
        counts[key] += 1
        logged[key].add(round(d.choice_probability, 12))
    return counts, logged


def test_the_shipped_policy_has_an_explore_arm() -> None:
    arms = {a.name: a for a in load_policy().experiments.definitions["nba"].arms}
    explore = [a for a in arms.values() if a.policy == "explore"]
    assert explore and all(0 < a.epsilon < 1 for a in explore)


@pytest.mark.parametrize(("epsilon", "top"), [(0.3, 0), (0.2, 2), (1.0, 0)])
def test_logged_probability_is_the_empirical_frequency(epsilon: float, top: int) -> None:
    policy = _policy(epsilon, top)
    counts, logged = _replay(policy, "explore")
    d = decide(_input(policy, "explore", 0.999), policy, Scorer(), PRIORS)  # no exploration
    greedy = d.action
    assert greedy is not None and d.exploration is not None
    assert len(counts) == d.exploration.actions  # every action was drawn at least once
    total = 0.0
    for key, c in counts.items():
        assert len(logged[key]) == 1  # one probability per action, whatever the draw
        p = next(iter(logged[key]))
        assert c / len(GRID) == pytest.approx(p, abs=2 / len(GRID))
        total += p
    assert total == pytest.approx(1.0)  # the logged probabilities form the whole distribution
    assert counts[(greedy.offer.offer_id, greedy.channel, greedy.send_at)] / len(GRID) >= (
        1 - epsilon
    )


def test_every_consented_channel_and_allowed_hour_is_explored() -> None:
    policy = _policy(0.3, 1)
    counts, _ = _replay(policy, "explore")
    greedy = decide(_input(policy, "model", 0.5), policy, Scorer(), PRIORS).action
    assert greedy is not None
    channels = {ch for _, ch, _ in counts}
    assert channels == {"email", "push", "in_app", "web"}  # no sms consent
    assert channels - {greedy.channel}  # channels the greedy policy would not use
    for ch in channels:
        hours = {datetime.fromtimestamp(ts, UTC).hour for _, c, ts in counts if c == ch}
        # quiet hours (push 21-8, email 23-6 local) are never explored; the rest all are
        allowed = {
            "email": set(range(6, 23)),
            "push": set(range(8, 21)),
            "in_app": set(range(24)),
            "web": set(range(24)),
        }[ch]
        assert hours == allowed, (ch, sorted(hours))


def test_the_budget_caps_the_value_given_up() -> None:
    free = decide(_input(_policy(0.5), "explore", 0.999), _policy(0.5), Scorer(), PRIORS)
    assert free.exploration is not None and free.exploration.cost > 0.05
    capped_policy = _policy(0.5, budget=0.05)
    capped = decide(_input(capped_policy, "explore", 0.999), capped_policy, Scorer(), PRIORS)
    assert capped.exploration is not None
    assert capped.exploration.cost == pytest.approx(0.05)
    assert capped.exploration.epsilon < 0.5
    counts, logged = _replay(capped_policy, "explore")  # still the true probabilities
    for key, c in counts.items():
        assert c / len(GRID) == pytest.approx(next(iter(logged[key])), abs=2 / len(GRID))


def test_deterministic_arms_and_holdout_log_probability_one() -> None:
    policy = _policy()
    for arm in ("model", "popular"):
        counts, logged = _replay(policy, arm)
        assert len(counts) == 1 and logged[next(iter(counts))] == {1.0}
    for u in (0.01, 0.5):
        d = decide(_input(policy, "holdout", u), policy, Scorer(), PRIORS)
        assert d.action is None and d.would_have is not None
        assert d.choice_probability == 1.0  # the control action, with certainty


def test_explore_arm_needs_a_valid_epsilon() -> None:
    with pytest.raises(ValueError, match="epsilon"):
        _policy(epsilon=0.0).validate()
    with pytest.raises(ValueError, match="epsilon"):
        _policy(epsilon=1.5).validate()
    assert Arm(name="x", share=1.0).epsilon == 0.0


def test_the_logged_candidates_rebuild_every_action_score() -> None:
    from service.engine.records import candidates_record

    policy = _policy(1.0, 0)
    for u in (0.013, 0.37, 0.71, 0.999):
        d = decide(_input(policy, "explore", u), policy, Scorer(), PRIORS)
        assert d.action is not None and d.scores is not None
        rec = candidates_record(d.scores)
        o = rec.offers.index(d.action.offer.offer_id)
        c = rec.channels.index(d.action.channel)
        h = d.action.local_hour
        assert h in rec.hours[d.action.channel]
        p = rec.p_channel[c] * rec.hour_lift[h] * rec.p_convert[o][c]
        assert p == pytest.approx(d.action.probability, rel=1e-4)
        assert p * rec.value[o] == pytest.approx(d.action.expected_value, rel=1e-4)
