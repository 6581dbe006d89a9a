"""next_allowed_hours (hot path, float arithmetic) equals its plain datetime definition."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain.config import ContactPolicy, load_policy
from service.domain.contact import in_quiet_hours, local_hour, next_allowed_hours

POLICY = load_policy(
    Path(__file__).resolve().parents[2] / "service" / "config" / "policy.yaml"
).contact_policy


def reference(
    policy: ContactPolicy, channel: str, now: float, tz: float | None, tz_name: str | None
) -> list[tuple[float, int]]:
    out = []
    base = datetime.fromtimestamp(now, UTC).replace(minute=0, second=0, microsecond=0)
    for k in range(25):
        ts = max((base + timedelta(hours=k)).timestamp(), now)
        if ts >= now + 24 * 3600:
            break
        h = local_hour(ts, tz, tz_name)
        if not in_quiet_hours(policy, channel, h):
            out.append((ts, h))
    return out


@settings(max_examples=400, deadline=None)
@given(
    now=st.one_of(
        st.floats(1.5e9, 2.0e9, allow_nan=False),
        st.integers(1_500_000_000 // 3600, 2_000_000_000 // 3600).map(lambda h: h * 3600.0),
    ),
    tz=st.one_of(st.none(), st.sampled_from([0.0, 5.5, -3.5, 9.0, -11.0, 13.75])),
    tz_name=st.sampled_from([None, "Europe/Berlin", "America/New_York", "Asia/Kolkata"]),
    channel=st.sampled_from(["email", "push", "sms", "in_app", "web"]),
)
def test_next_allowed_hours_equals_reference(
    now: float, tz: float | None, tz_name: str | None, channel: str
) -> None:
    assert next_allowed_hours(POLICY, channel, now, tz, tz_name) == reference(
        POLICY, channel, now, tz, tz_name
    )
