"""Learning from responses within the second (issue 16.3): feedback -> the next /decide.

Pure tests of the summary and of the decision's use of it, then the whole path over HTTP on
a real Redis with the session's model bundle: a dismissed offer is not offered again during
its cooldown, a clicked category is remembered, and deliveries without opens lower the
channel's P(open) in the very next decision.
"""

from __future__ import annotations

import time
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from litestar.testing import AsyncTestClient

from service.domain.config import PolicyConfig, load_policy
from service.domain.decision import DecisionInput, decide
from service.realtime.responses import NO_RESPONSES, Responses, member, summarize
from tests.realtime.conftest import AUTH
from tests.service.test_domain import PRIORS, FakeScorer, offer, replaced
from tests.service.test_domain import inp as domain_inp

NOW = datetime(2026, 11, 16, 12, 0, tzinfo=UTC).timestamp()
H = 3600.0


class TestSummary:
    def test_dismissals_count_within_the_cooldown_only(self) -> None:
        rows = [
            (member("dismissed", "OFF001", "home", "email", "d1"), NOW - 2 * H),
            (member("dismissed", "OFF002", "home", "email", "d2"), NOW - 100 * H),
            (member("dismissed", "OFF003", "home", "email", "d3"), NOW + H),  # after "now"
        ]
        s = summarize(rows, NOW, 72 * H, None)
        assert s.dismissed == {"OFF001": NOW - 2 * H}

    def test_clicks_and_conversions_name_categories(self) -> None:
        rows = [
            (member("clicked", "OFF001", "home", "email", "d1"), NOW - H),
            (member("converted", "OFF002", "garden", "push", "d2"), NOW - H),
            (member("opened", "OFF003", "toys", "push", "d3"), NOW - H),
        ]
        assert summarize(rows, NOW, 72 * H, None).categories == {"home", "garden"}

    def test_channel_responses_after_the_engagement_row_only(self) -> None:
        rows = [
            (member("delivered", "OFF001", "home", "email", "d1"), NOW - 10 * H),
            (member("delivered", "OFF001", "home", "email", "d2"), NOW - H),
            (member("opened", "OFF001", "home", "email", "d2"), NOW - H),
            (member("opened", "OFF001", "home", "push", "d3"), NOW - H),  # delivery implied
        ]
        s = summarize(rows, NOW, 72 * H, since=NOW - 5 * H)
        assert s.channels == {"email": (1, 1), "push": (1, 1)}
        assert summarize(rows, NOW, 72 * H, since=None).channels["email"] == (2, 1)

    def test_no_responses_summarize_to_the_engines_constant(self) -> None:
        """The engine skips :func:`summarize` for a customer without responses and uses
        ``NO_RESPONSES``: it must be exactly what summarizing nothing gives."""
        for since in (None, NOW - 5 * H, NOW + H):
            for cooldown in (0.0, 72 * H):
                s = summarize([], NOW, cooldown, since)
                assert s == NO_RESPONSES
                for f in fields(Responses):  # equal and of the same type (set == frozenset)
                    assert type(getattr(s, f.name)) is type(getattr(NO_RESPONSES, f.name))
                assert s.as_log(NOW) == NO_RESPONSES.as_log(NOW)
        assert Responses({}, frozenset(), {}) == NO_RESPONSES  # and nothing in it


@pytest.fixture(scope="module")
def policy() -> PolicyConfig:
    return load_policy()


def inp(policy: PolicyConfig, **kw: object) -> DecisionInput:
    """test_domain's input (same NOW), its third offer in the category the tests respond to."""
    kw.setdefault("candidates", [offer(1, 20.0), offer(2, 200.0), offer(3, 100.0, category="home")])
    return domain_inp(policy, **kw)


class TestDecisionLearns:
    def test_a_dismissed_offer_is_ineligible_during_its_cooldown(
        self, policy: PolicyConfig
    ) -> None:
        d = decide(inp(policy), policy, FakeScorer(), PRIORS)
        assert d.action is not None and d.action.offer.offer_id == "OFF002"
        d = decide(inp(policy, dismissed={"OFF002": NOW - H}), policy, FakeScorer(), PRIORS)
        assert d.action is not None and d.action.offer.offer_id != "OFF002"
        assert any(
            s.offer_id == "OFF002" and s.detail.startswith("dismissed 1.0 h ago")
            for s in d.suppressed
        )

    def test_a_responded_category_is_boosted(self, policy: PolicyConfig) -> None:
        p2 = replaced(policy, "learning", category_boost=3.0)
        base = decide(inp(p2), p2, FakeScorer(), PRIORS)
        assert base.action is not None and base.action.offer.offer_id == "OFF002"
        d = decide(inp(p2, responded_categories=frozenset({"home"})), p2, FakeScorer(), PRIORS)
        assert d.action is not None and d.action.offer.offer_id == "OFF003"  # 100 x 3 > 200

    def test_deliveries_without_opens_move_the_channel(self, policy: PolicyConfig) -> None:
        base = decide(inp(policy), policy, FakeScorer(), PRIORS)
        assert base.action is not None and base.action.channel == "push"  # the fake's best
        d = decide(inp(policy, channel_responses={"push": (6, 0)}), policy, FakeScorer(), PRIORS)
        k = policy.learning.channel_prior_weight
        assert d.channel_scores["push"] == pytest.approx(0.4 * k / (k + 6))
        assert d.action is not None and d.action.channel != "push"
        assert d.scores is not None
        j = d.scores.channels.index("push")
        assert d.scores.p_channel[j] == pytest.approx(0.4 * k / (k + 6))  # logged as used


# ------------------------------------------------------------------ over HTTP, real Redis


def _customer(small_world: Path, k: int) -> str:
    import pandas as pd

    truth = pd.read_parquet(small_world / "truth" / "truth_customers.parquet")
    ok = truth[~truth["anonymous"] & ~truth["opted_out"] & truth["consent_email"]]
    features = small_world / "features"
    prof = pd.read_parquet(features / "customer_profile.parquet", columns=["customer_id"])
    beh = pd.read_parquet(features / "customer_behaviour.parquet", columns=["customer_id"])
    have = set(prof["customer_id"]) & set(beh["customer_id"])
    return [str(c) for c in ok["customer_id"] if c in have][20 + k]


async def _decide(c: AsyncTestClient[Any], body: dict[str, Any]) -> dict[str, Any]:
    resp = await c.post("/decide", json=body, headers=AUTH)
    assert resp.status_code == 200, resp.text
    out: dict[str, Any] = resp.json()
    return out


def _body(small_world: Path, k: int) -> dict[str, Any]:
    """A /decide body for the k-th known customer, model arm, with the explanation."""
    return {
        "customer_id": _customer(small_world, k),
        "context": {"placement": "home_banner"},
        "experiment": {"arm": "model"},
        "explain": True,
    }


async def _feedback(c: AsyncTestClient[Any], decision_id: str, event: str) -> None:
    resp = await c.post(
        "/feedback", json={"decision_id": decision_id, "event": event}, headers=AUTH
    )
    assert resp.status_code == 200 and resp.json()["status"] == "accepted", resp.text


@pytest.mark.redis
@pytest.mark.anyio
async def test_a_dismissal_reaches_the_next_decision_within_the_second(
    client_models: AsyncTestClient[Any], small_world: Path
) -> None:
    body = _body(small_world, 0)
    first = await _decide(client_models, body)
    assert first["action"] is not None and not first["cold_start"]
    shown = first["action"]["offer_id"]
    t0 = time.perf_counter()
    await _feedback(client_models, first["decision_id"], "dismissed")
    await _feedback(client_models, first["decision_id"], "clicked")  # a click before it
    again = await _decide(client_models, body)
    assert time.perf_counter() - t0 < 1.0
    assert again["action"] is None or again["action"]["offer_id"] != shown
    assert any(
        s["offer_id"] == shown and s["detail"].startswith("dismissed") for s in again["suppressed"]
    )
    learned = again["explain"]["realtime"]["responses"]
    assert shown in learned["dismissed"] and learned["responded_categories"]


@pytest.mark.redis
@pytest.mark.anyio
async def test_deliveries_without_opens_lower_the_channel_in_the_next_decision(
    client_models: AsyncTestClient[Any], small_world: Path
) -> None:
    body = _body(small_world, 1)
    first = await _decide(client_models, body)
    assert first["action"] is not None and first["action"]["channel"] == "web"
    before = first["explain"]["channel_scores"]["web"]
    ids = [first["decision_id"]]
    for _ in range(3):
        ids.append((await _decide(client_models, body))["decision_id"])
    for did in ids:
        await _feedback(client_models, did, "delivered")
    after = (await _decide(client_models, body))["explain"]["channel_scores"]["web"]
    k = load_policy().learning.channel_prior_weight
    assert after == pytest.approx(before * k / (k + 4), rel=1e-6)
    assert np.isfinite(after) and after < before
