"""Property-based tests: the allocation hash and the contact-policy window arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain.allocation import allocate, bucket
from service.domain.config import Cap, ContactPolicy, QuietHours, load_policy
from service.domain.contact import blocked_by_caps, local_hour, next_allowed_hours

POLICY = load_policy()
ids = st.text(min_size=1, max_size=40)
epochs = st.floats(min_value=1.6e9, max_value=2.0e9, allow_nan=False)
zones = st.sampled_from(
    [
        "Europe/Berlin",
        "America/New_York",
        "Australia/Sydney",
        "Asia/Kolkata",
        "America/St_Johns",
        "UTC",
    ]
)


class TestAllocationHash:
    @given(ids, st.text(max_size=10), st.text(max_size=10))
    def test_stable_and_in_range(self, unit: str, salt: str, exp: str) -> None:
        b = bucket(salt, exp, unit)
        assert 0 <= b < 10_000
        assert b == bucket(salt, exp, unit)

    @given(ids)
    def test_allocation_is_sticky_and_valid(self, unit: str) -> None:
        a = allocate(POLICY.experiments, unit)
        assert a == allocate(POLICY.experiments, unit)
        arms = {x.name for x in POLICY.experiments.definitions["nba"].arms} | {"holdout"}
        assert a.arm in arms

    @settings(max_examples=20)
    @given(st.text(min_size=1, max_size=8))
    def test_uniform_for_any_salt(self, salt: str) -> None:
        counts = [0] * 4
        for i in range(4000):
            counts[bucket(salt, "e", f"u{i}", 4)] += 1
        assert min(counts) > 850  # expected 1000 each; 5 sigma is about 137


class TestWindows:
    @given(
        st.lists(
            st.tuples(st.floats(0, 10 * 86400), st.sampled_from(["push", "email", "sms"])),
            max_size=12,
        ),
        st.floats(0, 10 * 86400),
        st.integers(1, 4),
        st.floats(1, 200),
    )
    def test_cap_counts_exactly_the_window(
        self, hist: list[tuple[float, str]], now: float, cap_max: int, hours: float
    ) -> None:
        pol = ContactPolicy(caps=[Cap(channel="push", max=cap_max, window_hours=hours)])
        in_window = sum(1 for ts, ch in hist if ch == "push" and now - hours * 3600 < ts <= now)
        blocked = blocked_by_caps(pol, hist, "push", now) is not None
        assert blocked == (in_window + 1 > cap_max)

    @given(epochs, zones)
    def test_local_hour_agrees_with_zoneinfo(self, ts: float, tz: str) -> None:
        want = datetime.fromtimestamp(ts, ZoneInfo(tz)).hour
        assert local_hour(ts, None, tz) == want

    @given(epochs, zones, st.integers(0, 23), st.integers(0, 23))
    def test_allowed_slots_are_outside_quiet_hours_and_within_a_day(
        self, ts: float, tz: str, start: int, end: int
    ) -> None:
        pol = ContactPolicy(quiet_hours=[QuietHours(channels=["push"], start=start, end=end)])
        slots = next_allowed_hours(pol, "push", ts, None, tz)
        q = pol.quiet_hours[0]
        for at, h in slots:
            assert ts <= at < ts + 86400
            assert h == datetime.fromtimestamp(at, ZoneInfo(tz)).hour
            assert not q.covers(h)
        assert [a for a, _ in slots] == sorted(a for a, _ in slots)

    def test_dst_gap_day_has_23_distinct_hours(self) -> None:
        # Europe/Berlin springs forward on 2026-03-29: local 02:00 does not exist
        ts = datetime(2026, 3, 28, 23, 0, tzinfo=UTC).timestamp()
        slots = next_allowed_hours(ContactPolicy(), "push", ts, None, "Europe/Berlin")
        hours = [h for _, h in slots]
        assert 2 not in hours and len(hours) == 24 and len(set(hours)) == 23
        assert slots[-1][0] - slots[0][0] == timedelta(hours=23).total_seconds()
