"""The Redis keyspace: every key nextbest reads or writes, built here and nowhere else.

``{x}`` in a key is a Redis Cluster hash tag: keys that one Lua script touches share a tag, so
they live in one slot. Per-unit keys are tagged with the unit (customer or anonymous id);
log keys with the decision's log shard ``{nbSS}`` (00-15, from the decision id), so a
decision's marker, its feedback markers and the streams it is appended to share a slot.

| key | type | written by | content |
|---|---|---|---|
| Feast's entity key (binary) | hash | Feast, ``/events`` | online features (Feast's layout) |
| ``nb:{u}:contacts`` | sorted set | /decide, feedback | outbound contacts, score = epoch, member ``ts|channel|decision`` |
| ``nb:{u}:purchased`` | set | feedback, /events | offers the customer bought |
| ``nb:{u}:fx:<decision_id>:<event>`` | string | feedback | outcome effect applied (exactly once, TTL) |
| ``nb:{u}:rt`` | hash | /events | real-time state (``last_ts``, ``row_us``, ``last_*_ts``) |
| ``nb:{u}:ev:<event_id>`` | string | /events | event idempotency marker (TTL) |
| ``nb:{u}:cart`` | hash | /events | ``q:<offer>`` quantity, ``v:<offer>`` value of the open cart |
| ``nb:{u}:rt:views`` / ``:purchases`` / ``:opens`` | sorted sets | /events | event ids by time (windows) |
| ``nb:{u}:responses`` | sorted set | /feedback | the customer's responses to messages, score = epoch, member ``event|offer|category|channel|decision`` (real-time features of the next decision) |
| ``nb:{a}:customer`` | string | /events identify | identity link: anonymous id -> customer id |
| ``nb:{c}:anonymous`` | set | /events identify | identity link: customer id -> anonymous ids |
| ``nb:dec:{nbSS}:<decision_id>`` | hash | /decide, /feedback | for the feedback window (TTL): ``m`` the compact decision marker, one field per outcome event logged (its idempotency marker) |
| ``nb:fb:{nbSS}:<decision_id>:<event>`` | string | /feedback | outcome idempotency marker of a decision logged by an earlier version (a string ``nb:dec:`` marker) |
| ``nb:log:decisions:{nbSS}`` / ``nb:log:feedback:{nbSS}`` | streams | /decide, /feedback | decision log and outcomes, until the exporter has written them to Parquet (consumer group ``nb-exporter``) |
| ``nb:seq:{nbseq}:timers`` / ``:leases`` | sorted sets | scheduler | due / claimed sequence steps |
| ``nb:seq:{nbseq}:i:<sequence>:<unit>`` | hash | scheduler | a unit's active sequence instance |
| ``nb:actions`` | stream | scheduler | actions for the delivery worker |
| ``nb:delivered:{<action_id>}`` | string | delivery worker | delivery idempotency marker |
| ``nb:log:sequences`` | stream | scheduler | one record per sequence step outcome |
| ``nb:rl:{key:<digest>}`` | hash | API guard | token bucket of one API key (``tokens``, ``ts``) |
| ``nb:rl:{auth:<client>}`` | hash | API guard | token bucket of one client's failed authentications |
"""

from __future__ import annotations

__all__ = [
    "ACTIONS_STREAM",
    "LOG_SHARDS",
    "PREFIX",
    "REALTIME_WINDOWS",
    "SEQUENCE_LOG",
    "SEQUENCE_TAG",
    "aliases_key",
    "auth_failures_key",
    "cart_key",
    "contacts_key",
    "decision_key",
    "decision_stream",
    "decision_streams",
    "delivered_key",
    "effect_marker_key",
    "event_marker_key",
    "feedback_marker_key",
    "feedback_stream",
    "feedback_streams",
    "link_key",
    "purchased_key",
    "rate_limit_key",
    "realtime_state_key",
    "realtime_window_key",
    "responses_key",
    "sequence_instance_key",
    "sequence_leases_key",
    "sequence_timers_key",
    "shard_tag",
]

#: every key of nextbest starts with this (Feast's own keys do not)
PREFIX = "nb:"
LOG_SHARDS = 16
SEQUENCE_TAG = "{nbseq}"
ACTIONS_STREAM = "nb:actions"
SEQUENCE_LOG = "nb:log:sequences"
#: the real-time windows kept per unit (sorted sets of event ids by time)
REALTIME_WINDOWS = ("views", "purchases", "opens")


# ------------------------------------------------------------------ per unit
def contacts_key(unit: str) -> str:
    return f"nb:{{{unit}}}:contacts"


def purchased_key(unit: str) -> str:
    return f"nb:{{{unit}}}:purchased"


def effect_marker_key(unit: str, decision_id: str, event: str) -> str:
    """Set with what an outcome implies for ``unit`` (a purchase, a counted contact), in one
    script: the effect is applied once however often the outcome is sent."""
    return f"nb:{{{unit}}}:fx:{decision_id}:{event}"


def realtime_state_key(unit: str) -> str:
    return f"nb:{{{unit}}}:rt"


def realtime_window_key(unit: str, window: str) -> str:
    """``window``: one of :data:`REALTIME_WINDOWS`."""
    return f"nb:{{{unit}}}:rt:{window}"


def responses_key(unit: str) -> str:
    """The unit's responses to messages (feedback), by time: what the next decision learns."""
    return f"nb:{{{unit}}}:responses"


def event_marker_key(unit: str, event_id: str) -> str:
    return f"nb:{{{unit}}}:ev:{event_id}"


def cart_key(unit: str) -> str:
    return f"nb:{{{unit}}}:cart"


def link_key(anonymous_id: str) -> str:
    return f"nb:{{{anonymous_id}}}:customer"


def aliases_key(customer_id: str) -> str:
    return f"nb:{{{customer_id}}}:anonymous"


# ------------------------------------------------------------- decision log
def shard_tag(decision_id: str) -> str:
    """``{nbSS}``: the log shard of a decision, from the last two hex digits of its id."""
    try:
        s = int(decision_id[-2:], 16) % LOG_SHARDS
    except ValueError:
        s = sum(decision_id.encode()) % LOG_SHARDS
    return f"{{nb{s:02d}}}"


def decision_key(decision_id: str) -> str:
    return f"nb:dec:{shard_tag(decision_id)}:{decision_id}"


def feedback_marker_key(decision_id: str, event: str) -> str:
    return f"nb:fb:{shard_tag(decision_id)}:{decision_id}:{event}"


def decision_stream(decision_id: str) -> str:
    return f"nb:log:decisions:{shard_tag(decision_id)}"


def feedback_stream(decision_id: str) -> str:
    return f"nb:log:feedback:{shard_tag(decision_id)}"


def decision_streams() -> list[str]:
    return [f"nb:log:decisions:{{nb{s:02d}}}" for s in range(LOG_SHARDS)]


def feedback_streams() -> list[str]:
    return [f"nb:log:feedback:{{nb{s:02d}}}" for s in range(LOG_SHARDS)]


# ------------------------------------------------------------- rate limits
def rate_limit_key(key_digest: str) -> str:
    """The token bucket of one API key (``key_digest``: its SHA-256, never the key)."""
    return f"nb:rl:{{key:{key_digest}}}"


def auth_failures_key(client: str) -> str:
    """The token bucket of failed authentications from one client address."""
    return f"nb:rl:{{auth:{client}}}"


# -------------------------------------------------------------- sequences
def sequence_timers_key() -> str:
    return f"nb:seq:{SEQUENCE_TAG}:timers"


def sequence_leases_key() -> str:
    return f"nb:seq:{SEQUENCE_TAG}:leases"


def sequence_instance_key(sequence: str, unit: str) -> str:
    return f"nb:seq:{SEQUENCE_TAG}:i:{sequence}:{unit}"


def delivered_key(action_id: str) -> str:
    return f"nb:delivered:{{{action_id}}}"
