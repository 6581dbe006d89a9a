"""Contact policy arithmetic: rolling-window frequency caps and quiet hours.

Contacts are (timestamp, channel) pairs; all times are epoch seconds (UTC). Local hours use
an explicit UTC offset or an IANA time zone (DST-aware).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from service.domain.config import Cap, ContactPolicy

__all__ = [
    "blocked_by_caps",
    "capped_channels",
    "in_quiet_hours",
    "local_hour",
    "max_window_seconds",
    "next_allowed_hours",
]


def max_window_seconds(policy: ContactPolicy) -> float:
    return max((c.window_hours for c in policy.caps), default=0.0) * 3600.0


def blocked_by_caps(
    policy: ContactPolicy, history: Iterable[tuple[float, str]], channel: str, now: float
) -> Cap | None:
    """The first cap that one more ``channel`` contact at ``now`` would break, else None."""
    if channel not in policy.capped_channels:
        return None
    hist = list(history)
    for cap in policy.caps:
        if cap.channel not in (channel, "*"):
            continue
        since = now - cap.window_hours * 3600.0
        used = sum(
            1
            for ts, ch in hist
            if ts > since
            and ts <= now
            and (cap.channel == "*" or ch == channel)
            and ch in policy.capped_channels
        )
        if used + 1 > cap.max:
            return cap
    return None


def capped_channels(
    policy: ContactPolicy, history: Sequence[tuple[float, str]], channels: Iterable[str], now: float
) -> dict[str, Cap]:
    out: dict[str, Cap] = {}
    for ch in channels:
        cap = blocked_by_caps(policy, history, ch, now)
        if cap is not None:
            out[ch] = cap
    return out


def local_hour(now: float, tz_offset_hours: float | None, tz_name: str | None = None) -> int:
    """The local hour at ``now``: IANA ``tz_name`` wins (DST-aware), else a fixed offset."""
    if tz_name:
        return datetime.fromtimestamp(now, ZoneInfo(tz_name)).hour
    off = tz_offset_hours or 0.0
    return int(((now + off * 3600.0) // 3600.0) % 24)


def in_quiet_hours(policy: ContactPolicy, channel: str, hour: int) -> bool:
    return any(channel in q.channels and q.covers(hour) for q in policy.quiet_hours)


def next_allowed_hours(
    policy: ContactPolicy,
    channel: str,
    now: float,
    tz_offset_hours: float | None,
    tz_name: str | None = None,
) -> list[tuple[float, int]]:
    """The starts of the next 24 whole local hours (epoch, local hour) outside quiet hours.

    The first slot is ``now`` itself when the current hour is allowed.
    """
    out: list[tuple[float, int]] = []
    # (hot path: called per channel on every non-real-time decision) the channel's quiet
    # windows once, and whole UTC hours as float seconds (exact: integers below 2**53)
    quiet = [q for q in policy.quiet_hours if channel in q.channels]
    base = datetime.fromtimestamp(now, UTC).replace(minute=0, second=0, microsecond=0)
    base_ts = base.timestamp()
    end = now + 24 * 3600
    for k in range(25):
        ts = max(base_ts + 3600.0 * k, now)
        if ts >= end:
            break
        h = local_hour(ts, tz_offset_hours, tz_name)
        if not any(q.covers(h) for q in quiet):
            out.append((ts, h))
    return out
