"""Pure decision logic: consent, eligibility, contact policy, arbitration, allocation.

No server, no Redis: a hand-written fake scorer stands in for the ONNX models.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from datetime import UTC, datetime

import msgspec
import numpy as np
import pytest

from contracts.features import DEFAULT_SPEC
from service.domain.allocation import AllocationError, allocate, bucket
from service.domain.config import ContactPolicy, PolicyConfig, QuietHours, load_policy
from service.domain.contact import blocked_by_caps, local_hour, next_allowed_hours
from service.domain.decision import DecisionInput, Offer, Priors, decide
from service.features.freshness import drop_stale

CHANNELS = DEFAULT_SPEC.channels
RAW_FEATURES = DEFAULT_SPEC.raw
PRICE = DEFAULT_SPEC.propensity_features.index("offer_price")

NOW = datetime(2026, 11, 16, 12, 0, tzinfo=UTC).timestamp()  # 12:00 UTC


class FakeScorer:
    """Propensity grows with the offer price column; channel prefers push; hour peaks at 7."""

    def propensity(self, x: np.ndarray) -> np.ndarray:
        price = x[:, PRICE].astype(np.float64)
        return 0.05 + price / 10_000.0

    def send_time(self, x: np.ndarray) -> np.ndarray:
        hour = x[:, 10].astype(np.float64)
        return 0.1 + 0.2 * np.exp(-((hour - 7) ** 2) / 4.0)

    def channel(self, x: np.ndarray) -> np.ndarray:
        ch = x[:, 15].astype(np.int64)
        return np.where(ch == CHANNELS.index("push"), 0.4, 0.2)


def offer(i: int, price: float = 50.0, **kw: object) -> Offer:
    base = {
        "offer_id": f"OFF{i:03d}",
        "name": f"Offer {i}",
        "category": "outdoor",
        "category_idx": 0,
        "price": price,
        "margin": 0.5,
        "valid_from": NOW - 86400,
        "valid_to": NOW + 86400,
    }
    base.update(kw)
    return Offer(**base)  # type: ignore[arg-type]


PRIORS = Priors(
    hour_open_rate=[0.1] * 10 + [0.3] + [0.1] * 13,
    best_hour=10,
    channel_open_rate={c: 0.2 for c in CHANNELS},
    channel_order=list(CHANNELS),
    offer_conversion_rate={"OFF001": 0.01, "OFF002": 0.03, "OFF003": 0.02},
    offer_order=["OFF002", "OFF003", "OFF001"],
)


def features(**over: float) -> dict[str, np.ndarray]:
    raw = {name: 0.0 for names in RAW_FEATURES.values() for name in names}
    raw.update({f"consent_{c}": 1.0 for c in CHANNELS})
    raw.update(tz_offset=0.0, lifecycle=1.0, signup_day=20000.0, opted_out=0.0)
    raw.update(views_total=25.0)  # a customer with history (not a cold start)
    raw.update(over)
    return {k: np.array([v]) for k, v in raw.items()}


@pytest.fixture(scope="module")
def policy() -> PolicyConfig:
    return load_policy()


def inp(policy: PolicyConfig, **kw: object) -> DecisionInput:
    base: dict[str, object] = {
        "unit_id": "C1",
        "known": True,
        "features": features(),
        "now": NOW,
        "placement": "campaign",
        "channels": None,
        "candidates": [offer(1, 20.0), offer(2, 200.0), offer(3, 100.0)],
        "allocation": allocate(policy.experiments, "C1", arm="model"),
        "contact_history": [],
    }
    base.update(kw)
    return DecisionInput(**base)  # type: ignore[arg-type]


def replaced(policy: PolicyConfig, section: str, **changes: object) -> PolicyConfig:
    """``policy`` with ``changes`` to one of its sections (``arbitration``, ``learning``, ...)."""
    part = msgspec.structs.replace(getattr(policy, section), **changes)
    return msgspec.structs.replace(policy, **{section: part})


class TestArbitration:
    def test_highest_expected_value_wins_on_best_channel(self, policy: PolicyConfig) -> None:
        d = decide(inp(policy), policy, FakeScorer(), PRIORS)
        assert d.action is not None
        assert d.action.offer.offer_id == "OFF002"  # highest price -> highest propensity & value
        assert d.action.channel == "push"
        assert [a.offer.offer_id for a in d.alternatives] == ["OFF003", "OFF001"]
        assert d.action.expected_value == pytest.approx(d.action.probability * 200.0 * 0.5)

    def test_send_time_is_best_allowed_hour(self, policy: PolicyConfig) -> None:
        d = decide(inp(policy), policy, FakeScorer(), PRIORS)
        assert d.action is not None
        # the fake model peaks at 7, but push is quiet 21:00-08:00: the best allowed hour is 8
        assert d.action.channel == "push" and d.action.local_hour == 8
        assert NOW < d.action.send_at < NOW + 24 * 3600

    def test_levers_change_the_winner(self, policy: PolicyConfig) -> None:
        p2 = replaced(policy, "arbitration", levers={"OFF003": 5.0})
        d = decide(inp(p2), p2, FakeScorer(), PRIORS)
        assert d.action is not None and d.action.offer.offer_id == "OFF003"

    def test_nothing_clears_the_threshold(self, policy: PolicyConfig) -> None:
        p2 = replaced(policy, "arbitration", min_expected_value=1e6)
        d = decide(inp(p2), p2, FakeScorer(), PRIORS)
        assert d.action is None
        assert {s.reason for s in d.suppressed} == {"below_threshold"}

    def test_realtime_placement_sends_now_on_its_channel(self, policy: PolicyConfig) -> None:
        d = decide(inp(policy, placement="home_banner"), policy, FakeScorer(), PRIORS)
        assert d.action is not None
        assert d.action.channel == "web" and d.action.send_at == NOW


class TestConsent:
    def test_opted_out_gets_nothing(self, policy: PolicyConfig) -> None:
        d = decide(inp(policy, features=features(opted_out=1.0)), policy, FakeScorer(), PRIORS)
        assert d.action is None and d.opted_out
        assert [s.reason for s in d.suppressed] == ["no_consent"]

    def test_channel_without_consent_is_never_chosen(self, policy: PolicyConfig) -> None:
        d = decide(inp(policy, features=features(consent_push=0.0)), policy, FakeScorer(), PRIORS)
        assert d.action is not None and d.action.channel != "push"
        assert any(s.reason == "no_consent" and s.channel == "push" for s in d.suppressed)

    def test_anonymous_visitor_only_on_site(self, policy: PolicyConfig) -> None:
        d = decide(inp(policy, known=False, features=None), policy, None, PRIORS)
        assert d.cold_start
        assert d.action is not None and d.action.channel in ("web", "in_app")
        assert {s.channel for s in d.suppressed if s.reason == "no_consent"} == {
            "email",
            "push",
            "sms",
        }

    @pytest.mark.parametrize(
        ("placement", "channel"), [("app_screen", "in_app"), ("home_banner", "web")]
    )
    def test_in_session_channel_refused_by_its_consent_flag(
        self, policy: PolicyConfig, placement: str, channel: str
    ) -> None:
        """Issue 14.6: a customer with in-app (web) consent 0 is not scored for in_app (web)."""
        feats = features(**{f"consent_{channel}": 0.0})
        d = decide(inp(policy, placement=placement, features=feats), policy, FakeScorer(), PRIORS)
        assert d.action is None and not d.channel_scores
        assert [(s.reason, s.channel) for s in d.suppressed] == [("no_consent", channel)]

    def test_in_session_channel_without_a_known_flag_is_generic(self, policy: PolicyConfig) -> None:
        """Consent unknown (no profile value): the in-session channel is still used; an
        outbound one is not."""
        feats = features(consent_web=float("nan"), consent_email=float("nan"))
        web = decide(
            inp(policy, placement="home_banner", features=feats), policy, FakeScorer(), PRIORS
        )
        assert web.action is not None and web.action.channel == "web"
        mail = decide(inp(policy, placement="email", features=feats), policy, FakeScorer(), PRIORS)
        assert mail.action is None and mail.suppressed[0].reason == "no_consent"


class TestFreshness:
    """Issue 14.6: features are only as good as their view's TTL."""

    def stamps(self, behaviour_age_days: float) -> dict[str, float]:
        return {
            "customer_profile": NOW - 400 * 86400,  # written at sign-up; TTL 10 years
            "customer_behaviour": NOW - behaviour_age_days * 86400,  # TTL 21 days
            "customer_engagement": NOW - 2 * 86400,
        }

    def test_fresh_views_are_kept(self) -> None:
        fresh = drop_stale(
            features(recency_days=3.0), self.stamps(1), DEFAULT_SPEC.customer_views, NOW
        )
        assert fresh.stale == () and fresh.newest == NOW - 86400
        assert fresh.features is not None and fresh.features["recency_days"][0] == 3.0

    def test_a_stale_view_is_missing_and_named(self) -> None:
        fresh = drop_stale(
            features(recency_days=3.0), self.stamps(197), DEFAULT_SPEC.customer_views, NOW
        )
        assert fresh.stale == ("customer_behaviour",)
        assert fresh.features is not None
        assert all(np.isnan(fresh.features[n][0]) for n in DEFAULT_SPEC.behaviour.names)
        assert fresh.features["consent_push"][0] == 1.0  # the profile is within its TTL
        assert fresh.newest == NOW - 2 * 86400

    def test_all_views_stale_is_no_features(self) -> None:
        old = {k: NOW - 4000 * 86400 for k in self.stamps(0)}
        fresh = drop_stale(features(), old, DEFAULT_SPEC.customer_views, NOW)
        assert fresh.features is None and len(fresh.stale) == 3


class TestContactPolicy:
    def test_push_cap_blocks_push(self, policy: PolicyConfig) -> None:
        hist = [(NOW - 3600, "push")]
        d = decide(inp(policy, contact_history=hist), policy, FakeScorer(), PRIORS)
        assert d.action is not None and d.action.channel != "push"
        assert any(s.reason == "frequency_cap" and s.channel == "push" for s in d.suppressed)

    def test_cross_channel_cap(self, policy: PolicyConfig) -> None:
        hist = [(NOW - 86400 * k, ch) for k, ch in ((1, "email"), (2, "email"), (3, "sms"))]
        d = decide(inp(policy, contact_history=hist), policy, FakeScorer(), PRIORS)
        assert d.action is not None and d.action.channel in ("web", "in_app")
        capped = {s.channel for s in d.suppressed if s.reason == "frequency_cap"}
        assert capped == {"email", "push", "sms"}

    def test_old_contacts_fall_out_of_the_window(self, policy: PolicyConfig) -> None:
        hist = [(NOW - 86400 - 1, "push")]
        d = decide(inp(policy, contact_history=hist), policy, FakeScorer(), PRIORS)
        assert d.action is not None and d.action.channel == "push"

    def test_unknown_history_means_no_capped_channel(self, policy: PolicyConfig) -> None:
        d = decide(inp(policy, contact_history=None), policy, FakeScorer(), PRIORS)
        assert d.action is not None and d.action.channel in ("web", "in_app")
        assert "contact_history_unavailable" in d.degraded

    def test_unknown_history_may_be_allowed_by_config(self, policy: PolicyConfig) -> None:
        allow = replaced(policy, "contact_policy", caps_unavailable="allow")
        d = decide(inp(allow, contact_history=None), allow, FakeScorer(), PRIORS)
        assert d.action is not None and d.action.channel == "push"  # the model's favourite
        assert "contact_history_unavailable" in d.degraded
        assert not [s for s in d.suppressed if s.reason == "frequency_cap"]

    def test_quiet_hours_block_realtime_push(self, policy: PolicyConfig) -> None:
        late = datetime(2026, 11, 16, 22, 30, tzinfo=UTC).timestamp()
        pol = msgspec.structs.replace(
            policy,
            placements={**policy.placements, "push_now": msgspec.structs.replace(
                policy.placements["push_batch"], realtime=True)},
        )  # fmt: skip
        d = decide(inp(pol, now=late, placement="push_now"), pol, FakeScorer(), PRIORS)
        assert d.action is None
        assert [s.reason for s in d.suppressed] == ["quiet_hours"]

    def test_batch_push_is_scheduled_outside_quiet_hours(self, policy: PolicyConfig) -> None:
        d = decide(inp(policy, placement="push_batch"), policy, FakeScorer(), PRIORS)
        assert d.action is not None
        assert not (d.action.local_hour >= 21 or d.action.local_hour < 8)

    def test_cap_window_arithmetic(self) -> None:
        from service.domain.config import Cap

        pol = ContactPolicy(caps=[Cap(channel="push", max=2, window_hours=24)])
        hist = [(100.0, "push"), (100.0 + 3600, "push")]
        assert blocked_by_caps(pol, hist, "push", 100.0 + 7200) is not None
        assert blocked_by_caps(pol, hist, "push", 100.0 + 86400 + 1) is None
        assert blocked_by_caps(pol, hist, "email", 100.0 + 7200) is None

    def test_quiet_hours_wrap_midnight(self) -> None:
        q = QuietHours(channels=["push"], start=21, end=8)
        assert q.covers(23) and q.covers(0) and q.covers(7)
        assert not q.covers(8) and not q.covers(20)

    def test_local_hour_with_dst(self) -> None:
        # 2026-03-29 01:30 UTC: Europe/Berlin has just switched to CEST (+2)
        ts = datetime(2026, 3, 29, 1, 30, tzinfo=UTC).timestamp()
        assert local_hour(ts, None, "Europe/Berlin") == 3
        assert local_hour(ts - 3600, None, "Europe/Berlin") == 1
        assert local_hour(ts, 5.0) == 6

    def test_next_allowed_hours_skip_quiet(self) -> None:
        pol = ContactPolicy(quiet_hours=[QuietHours(channels=["sms"], start=21, end=8)])
        slots = next_allowed_hours(pol, "sms", NOW, 0.0)
        assert slots and all(8 <= h < 21 for _, h in slots)
        assert slots[0] == (NOW, 12)


class TestEligibility:
    def test_validity_window(self, policy: PolicyConfig) -> None:
        expired = offer(2, 200.0, valid_to=NOW - 1)
        d = decide(inp(policy, candidates=[offer(1), expired]), policy, FakeScorer(), PRIORS)
        assert d.action is not None and d.action.offer.offer_id == "OFF001"
        assert any(s.reason == "ineligible" and s.offer_id == "OFF002" for s in d.suppressed)

    def test_already_purchased(self, policy: PolicyConfig) -> None:
        d = decide(inp(policy, purchased=frozenset({"OFF002"})), policy, FakeScorer(), PRIORS)
        assert d.action is not None and d.action.offer.offer_id != "OFF002"

    def test_lifecycle_rule(self, policy: PolicyConfig) -> None:
        welcome = offer(17, 500.0)
        d = decide(inp(policy, candidates=[offer(1), welcome]), policy, FakeScorer(), PRIORS)
        assert d.action is not None and d.action.offer.offer_id == "OFF001"
        new = features(lifecycle=0.0)
        d = decide(
            inp(policy, candidates=[offer(1), welcome], features=new), policy, FakeScorer(), PRIORS
        )
        assert d.action is not None and d.action.offer.offer_id == "OFF017"


class TestHoldoutAndArms:
    def test_holdout_gets_control_and_logs_counterfactual(self, policy: PolicyConfig) -> None:
        alloc = allocate(policy.experiments, "C1", arm="holdout")
        d = decide(inp(policy, allocation=alloc), policy, FakeScorer(), PRIORS)
        assert d.action is None and d.would_have is not None
        assert d.suppressed[-1].reason == "holdout"
        assert d.policy == "control" and d.choice_probability == 1.0

    def test_holdout_sees_the_configured_control_offer_on_site(self, policy: PolicyConfig) -> None:
        cfg = replaced(policy, "experiments", control_action="OFF001")
        alloc = allocate(cfg.experiments, "C1", arm="holdout")
        site = decide(
            inp(cfg, allocation=alloc, placement="home_banner"), cfg, FakeScorer(), PRIORS
        )
        # the model would show OFF002 (highest price); the holdout gets the default banner
        assert site.would_have is not None and site.would_have.offer.offer_id == "OFF002"
        assert site.action is not None and site.action.offer.offer_id == "OFF001"
        assert site.action.channel == "web" and site.policy == "control"
        batch = decide(inp(cfg, allocation=alloc), cfg, FakeScorer(), PRIORS)
        assert batch.action is None  # no message: the control is only shown on site
        gone = decide(
            inp(cfg, allocation=alloc, placement="home_banner", candidates=[offer(2, 200.0)]),
            cfg, FakeScorer(), PRIORS,
        )  # fmt: skip
        assert gone.action is None
        assert any(s.reason == "ineligible" and s.offer_id == "OFF001" for s in gone.suppressed)

    def test_popular_arm_ignores_the_model(self, policy: PolicyConfig) -> None:
        alloc = allocate(policy.experiments, "C1", arm="popular")
        d = decide(inp(policy, allocation=alloc), policy, FakeScorer(), PRIORS)
        assert d.action is not None and d.action.offer.offer_id == "OFF002"
        assert d.action.channel == "email"

    def test_cold_start_uses_priors(self, policy: PolicyConfig) -> None:
        d = decide(inp(policy, features=None, known=False), policy, None, PRIORS)
        assert d.cold_start and d.action is not None
        assert d.action.local_hour == PRIORS.best_hour  # batch placement: population best hour
        assert d.action.propensity in PRIORS.offer_conversion_rate.values()


def profile_only(**over: float) -> dict[str, np.ndarray]:
    """A customer who signed up recently: a profile row, no behaviour or engagement row."""
    profile = set(DEFAULT_SPEC.profile.names)
    return {k: v if k in profile else np.array([np.nan]) for k, v in features(**over).items()}


#: the population opens most at 21:00 local (the prior the model bundle carries)
EVENING_PRIORS = Priors(
    hour_open_rate=[0.05] * 7 + [0.1] * 11 + [0.15, 0.2, 0.25, 0.3, 0.1, 0.05],
    best_hour=21,
    channel_open_rate={"email": 0.3, "push": 0.1, "sms": 0.15, "in_app": 0.2, "web": 0.05},
    channel_order=["email", "in_app", "sms", "push", "web"],
    offer_conversion_rate={"OFF001": 0.01, "OFF002": 0.03, "OFF003": 0.02},
    offer_order=["OFF002", "OFF003", "OFF001"],
)


class TestColdStart:
    """Issue 16.4: too little history is a cold start, decided from what is known."""

    def test_profile_without_history_is_flagged(self, policy: PolicyConfig) -> None:
        d = decide(inp(policy, features=profile_only()), policy, FakeScorer(), EVENING_PRIORS)
        assert d.cold_start and d.action is not None
        assert d.action.propensity in EVENING_PRIORS.offer_conversion_rate.values()

    def test_hours_the_data_never_showed_do_not_silence_the_decision(
        self, policy: PolicyConfig
    ) -> None:
        """Data without send hours (Hillstrom) leaves hours without a rate: no lift there."""
        gaps = dataclasses.replace(EVENING_PRIORS, hour_open_rate=[float("nan")] * 12 + [0.2] * 12)
        d = decide(inp(policy, features=profile_only()), policy, FakeScorer(), gaps)
        assert d.cold_start and d.action is not None
        none = dataclasses.replace(EVENING_PRIORS, hour_open_rate=[float("nan")] * 24)
        d = decide(inp(policy, features=profile_only()), policy, FakeScorer(), none)
        assert d.action is not None and math.isfinite(d.action.probability)

    def test_a_score_that_is_not_a_number_is_suppressed_with_its_reason(
        self, policy: PolicyConfig
    ) -> None:
        broken = dataclasses.replace(
            EVENING_PRIORS,
            offer_conversion_rate=dict.fromkeys(("OFF001", "OFF002", "OFF003"), float("nan")),
        )
        d = decide(inp(policy, features=profile_only()), policy, FakeScorer(), broken)
        assert d.action is None
        assert any(s.detail == "score is not a number" for s in d.suppressed)

    def test_fewer_events_than_the_policy_minimum_is_flagged(self, policy: PolicyConfig) -> None:
        n = policy.cold_start.min_events
        few = features(views_total=float(n - 1), sent_email=0.0)
        enough = features(views_total=float(n - 1), sent_email=1.0)
        assert decide(inp(policy, features=few), policy, FakeScorer(), EVENING_PRIORS).cold_start
        d = decide(inp(policy, features=enough), policy, FakeScorer(), EVENING_PRIORS)
        assert not d.cold_start

    @pytest.mark.parametrize("tz", [-8.0, 0.0, 9.0])
    def test_send_hour_is_local_daytime_not_the_population_peak(
        self, policy: PolicyConfig, tz: float
    ) -> None:
        cs = policy.cold_start
        feats = profile_only(tz_offset=tz)
        d = decide(inp(policy, features=feats), policy, FakeScorer(), EVENING_PRIORS)
        assert d.cold_start and d.action is not None
        assert cs.send_hours_start <= d.action.local_hour < cs.send_hours_end
        # the population's best hour inside the daytime window (18:00 here, not 21:00)
        assert d.action.local_hour == 18
        sent_local = datetime.fromtimestamp(d.action.send_at, UTC).hour + tz
        assert sent_local % 24 == d.action.local_hour

    def test_consents_choose_the_channel_by_population_open_rate(
        self, policy: PolicyConfig
    ) -> None:
        feats = profile_only(consent_email=0.0)
        d = decide(inp(policy, features=feats), policy, FakeScorer(), EVENING_PRIORS)
        assert d.action is not None and d.action.channel == "in_app"  # best consented prior
        d = decide(inp(policy, features=profile_only()), policy, FakeScorer(), EVENING_PRIORS)
        assert d.action is not None and d.action.channel == "email"

    def test_a_recent_session_sets_the_hour(self, policy: PolicyConfig) -> None:
        """Seen at 07:30 local (an early riser): the send goes out at 7, not in the evening."""
        tz = 2.0
        now = datetime(2026, 11, 16, 6, 0, tzinfo=UTC).timestamp()  # 08:00 local
        seen = now - 1800  # 07:30 local
        feats = profile_only(tz_offset=tz)
        d = decide(
            inp(policy, features=feats, now=now, session_ts=seen), policy, FakeScorer(),
            EVENING_PRIORS,
        )  # fmt: skip
        assert d.cold_start and d.action is not None
        assert d.action.local_hour == 7 and d.action.channel == "email"
        # an old session says nothing: back to daytime
        d = decide(
            inp(policy, features=feats, now=now, session_ts=seen - 86400), policy, FakeScorer(),
            EVENING_PRIORS,
        )  # fmt: skip
        assert d.action is not None and d.action.local_hour == 18

    def test_a_session_in_quiet_hours_is_not_used(self, policy: PolicyConfig) -> None:
        tz = 0.0
        now = datetime(2026, 11, 16, 3, 30, tzinfo=UTC).timestamp()  # 03:30, e-mail quiet
        feats = profile_only(tz_offset=tz, consent_email=1.0)
        d = decide(
            inp(policy, features=feats, now=now, session_ts=now - 600), policy, FakeScorer(),
            EVENING_PRIORS,
        )  # fmt: skip
        assert d.action is not None
        quiet = [q for q in policy.contact_policy.quiet_hours if d.action.channel in q.channels]
        assert not any(q.covers(d.action.local_hour) for q in quiet)


class TestAllocation:
    def test_stable_and_close_to_shares(self, policy: PolicyConfig) -> None:
        exp = policy.experiments
        arms = Counter(allocate(exp, f"C{i}").arm for i in range(100_000))
        assert abs(arms["holdout"] / 100_000 - exp.global_holdout) < 0.005
        treated = 100_000 - arms["holdout"]
        for arm in exp.definitions["nba"].arms:  # every arm converges on its configured share
            assert abs(arms[arm.name] / treated - arm.share) < 0.01, arm.name
        assert all(allocate(exp, f"C{i}").arm == allocate(exp, f"C{i}").arm for i in range(500))

    def test_buckets_are_uniform(self) -> None:
        counts = np.bincount([bucket("s", "e", f"u{i}", 10) for i in range(50_000)], minlength=10)
        assert counts.min() > 4700 and counts.max() < 5300

    def test_caller_arm_is_validated_and_honoured(self, policy: PolicyConfig) -> None:
        a = allocate(policy.experiments, "C1", "nba", "popular")
        assert a.arm == "popular" and a.caller_allocated
        with pytest.raises(AllocationError) as e:
            allocate(policy.experiments, "C1", "nba", "nope")
        assert e.value.field == "experiment.arm"
        with pytest.raises(AllocationError):
            allocate(policy.experiments, "C1", "no_such_experiment")
