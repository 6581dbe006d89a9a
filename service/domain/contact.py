"""Contact policy arithmetic: rolling-window frequency caps and quiet hours.

Contacts are (timestamp, channel) pairs; all times are epoch seconds (UTC). Local hours use
an explicit UTC offset or an IANA time zone (DST-aware).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
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
    # hot path: called per channel on every non-real-time decision. The channel's quiet
    # hours become a 24-entry mask once; whole UTC hours are float seconds (exact: integers
    # below 2**53); with a fixed offset the local hour just advances by one per slot.
    blocked = [False] * 24
    for q in policy.quiet_hours:
        if channel in q.channels:
            for h in range(24):
                if q.covers(h):
                    blocked[h] = True
    out: list[tuple[float, int]] = []
    base_ts = now - now % 3600.0
    end = now + 24 * 3600
    if tz_name:  # DST-aware: ask the zone for every slot
        for k in range(25):
            ts = max(base_ts + 3600.0 * k, now)
            if ts >= end:
                break
            h = local_hour(ts, tz_offset_hours, tz_name)
            if not blocked[h]:
                out.append((ts, h))
        return out
    h = local_hour(now, tz_offset_hours)
    if not blocked[h]:
        out.append((now, h))
    h_base = local_hour(base_ts, tz_offset_hours)
    for k in range(1, 25):
        ts = base_ts + 3600.0 * k
        if ts >= end:
            break
        h = (h_base + k) % 24
        if not blocked[h]:
            out.append((ts, h))
    return out
