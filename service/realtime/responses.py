"""Learning from responses within the second: what ``POST /feedback`` leaves for the next
decision of the same customer.

Every outcome of a decision with an action (``delivered``, ``opened``, ``clicked``,
``converted``, ``dismissed``) is recorded in the customer's ``nb:{u}:responses`` sorted set
(:func:`contracts.keys.responses_key`; score = the outcome's time, member
``event|offer|category|channel|decision``: a repeat of the same outcome is the same member,
so recording is idempotent). The next decision reads the set in its one Redis round trip and
:func:`summarize` turns it into three real-time features (``learning`` in policy.yaml):

| feature | from | used by the decision |
|---|---|---|
| dismissed offers | ``dismissed`` within ``dismiss_cooldown_hours`` | ineligible (``dismissed``) until the cooldown ends |
| responded categories | ``clicked`` or ``converted`` | expected value x ``category_boost`` |
| channel responses | ``delivered`` and ``opened`` per channel after the engagement row | P(open given channel) <- (k p + opens) / (k + delivered), k = ``channel_prior_weight`` |

Only responses newer than the customer's engagement feature row update the channel (older
ones are in the batch features already). Responses older than ``window_days`` are dropped
when the set is written.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["NO_RESPONSES", "RESPONSE_EVENTS", "Responses", "member", "parse_member", "summarize"]

RESPONSE_EVENTS = ("delivered", "opened", "clicked", "converted", "dismissed")
#: the most responses kept per customer (the oldest go first)
MAX_RESPONSES = 500


def member(event: str, offer: str, category: str, channel: str, decision_id: str) -> str:
    return f"{event}|{offer}|{category}|{channel}|{decision_id}"


def parse_member(m: str) -> tuple[str, str, str, str, str]:
    event, offer, category, channel, decision = m.split("|", 4)
    return event, offer, category, channel, decision


@dataclass(frozen=True, slots=True)
class Responses:
    """The real-time features the next decision uses (see the module docstring)."""

    #: offer -> time of its latest dismissal, within the cooldown
    dismissed: dict[str, float] = field(default_factory=dict)
    #: categories of offers the customer clicked or bought from
    categories: frozenset[str] = frozenset()
    #: channel -> (delivered, opened) after the engagement features' time
    channels: dict[str, tuple[int, int]] = field(default_factory=dict)

    def as_log(self, now: float) -> dict[str, object]:
        return {
            "dismissed": {o: round(now - t, 1) for o, t in sorted(self.dismissed.items())},
            "responded_categories": sorted(self.categories),
            "channel_responses": {c: list(v) for c, v in sorted(self.channels.items())},
        }


#: what :func:`summarize` returns for no responses (tests/realtime/test_learning.py checks it):
#: the engine uses it instead of summarizing an empty list. Shared by every such decision, so
#: never mutated (the decision reads its fields as read-only mappings).
NO_RESPONSES = Responses()


def summarize(
    rows: Iterable[tuple[str, float]], now: float, cooldown_s: float, since: float | None
) -> Responses:
    """``rows``: (member, time) of the customer's responses. ``since``: the engagement
    row's time (None: no row, every response counts for the channels)."""
    dismissed: dict[str, float] = {}
    cats: set[str] = set()
    delivered: dict[str, int] = {}
    opened: dict[str, int] = {}
    for m, ts in rows:
        try:
            event, offer, category, channel, _ = parse_member(m)
        except ValueError:
            continue
        if ts > now:  # a decision as of an earlier time does not see later responses
            continue
        if event == "dismissed" and now - ts < cooldown_s:
            dismissed[offer] = max(ts, dismissed.get(offer, ts))
        elif event in ("clicked", "converted") and category:
            cats.add(category)
        elif event in ("delivered", "opened") and channel and (since is None or ts > since):
            book = delivered if event == "delivered" else opened
            book[channel] = book.get(channel, 0) + 1
    channels = {
        c: (max(delivered.get(c, 0), opened.get(c, 0)), opened.get(c, 0))
        for c in {*delivered, *opened}
    }
    return Responses(dismissed, frozenset(cats), channels)
