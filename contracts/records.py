"""Records that cross a process boundary, as typed structs: written and read by one definition.

The service appends :class:`DecisionRecord` and :class:`FeedbackRecord` to the decision log
(JSON, drained into Parquet by the exporter: :mod:`contracts.log_schema` derives the files'
schema from these structs), keeps a compact :class:`DecisionMarker` per decision for the
feedback window (a MessagePack array: :func:`encode_marker`), and hands
:class:`ActionRecord` to the delivery worker; the offline tools (export, lift, OPE,
retraining) decode the same structs. Optional fields are omitted when they hold their
default, so a record carries only what it says; decoding fills the defaults back in.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = [
    "FEEDBACK_EVENTS",
    "ActionRecord",
    "CandidatesRecord",
    "ChoiceRecord",
    "DecisionMarker",
    "DecisionRecord",
    "ExplorationRecord",
    "FeedbackEvent",
    "FeedbackRecord",
    "SequenceStepRecord",
    "decode_action",
    "decode_decision",
    "decode_feedback",
    "decode_marker",
    "decode_sequence_step",
    "encode",
    "encode_marker",
]

FeedbackEvent = Literal["delivered", "opened", "clicked", "converted", "dismissed"]
FEEDBACK_EVENTS: tuple[str, ...] = ("delivered", "opened", "clicked", "converted", "dismissed")


class _Record(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    pass


class ChoiceRecord(_Record, frozen=True, kw_only=True, omit_defaults=True):
    """One scored (offer, channel, send time) action."""

    offer: str
    channel: str
    send_at: float  # epoch seconds
    local_hour: int
    p: float  # expected conversion probability
    ev: float  # expected value
    propensity: float  # P(convert | open) from the propensity model (or prior)
    channel_score: float
    hour_lift: float


class CandidatesRecord(_Record, frozen=True, kw_only=True, omit_defaults=True):
    """Every candidate's score, factored: the expected conversion of ``offers[o]`` on
    ``channels[c]`` at local hour ``h`` is ``p_channel[c] * hour_lift[h] * p_convert[o][c]``,
    its expected value that times ``value[o]``; ``hours[channel]`` lists the local hours the
    contact policy allowed (in send order). Any (offer, channel, hour) score can be rebuilt."""

    offers: list[str]
    channels: list[str]
    p_channel: list[float]
    hour_lift: list[float]  # 24 values
    p_convert: list[list[float]]  # [offer][channel]
    value: list[float]  # per offer: margin or price x levers x cart boost
    hours: dict[str, list[int]]


class ExplorationRecord(_Record, frozen=True, kw_only=True, omit_defaults=True):
    epsilon: float  # the exploration rate used for this decision
    cost: float  # expected value given up: epsilon x (EV greedy - EV expected when exploring)
    actions: int  # (offer, channel, hour) actions exploration could pick


class DecisionRecord(_Record, frozen=True, kw_only=True, omit_defaults=True):
    """One decision, as logged. An opted-out customer's record keeps only the fact of the call
    (``decision_id``, ``ts``, ``opted_out``, ``placement``, ``policy_version``)."""

    decision_id: str
    ts: float  # the decision's time (the request's ``now``), epoch seconds
    opted_out: bool = False
    unit: str | None = None  # customer id or anonymous id
    known: bool = False  # an identified customer
    placement: str | None = None
    trigger: str | None = None
    experiment: str | None = None
    arm: str | None = None
    holdout: bool = False
    policy: str | None = None  # model | popular | explore | control
    #: P(this action | context) under the logging policy (1 when deterministic)
    choice_probability: float = 1.0
    action: ChoiceRecord | None = None
    would_have: ChoiceRecord | None = None  # holdout: the treated action it did not get
    alternatives: list[ChoiceRecord] = []
    suppressed: list[tuple[str, str | None, str | None]] = []  # (reason, offer, channel)
    cold_start: bool = False
    degraded: list[str] = []
    model_versions: dict[str, str] = {}  # model kind -> registry version
    policy_version: str | None = None
    realtime: dict[str, Any] | None = None  # what the real-time layer saw
    #: how the arm was chosen: ``hashed`` (the unit's bucket) or ``caller`` (the request named
    #: the experiment arm): lift and sample-ratio checks use hashed units only
    allocation: Literal["hashed", "caller"] = "hashed"
    candidates: CandidatesRecord | None = None
    exploration: ExplorationRecord | None = None  # explore arm only


class FeedbackRecord(_Record, frozen=True, kw_only=True, omit_defaults=True):
    decision_id: str
    event: FeedbackEvent
    ts: float  # when the outcome happened, epoch seconds
    value: float | None = None  # e.g. the revenue of a conversion


class DecisionMarker(_Record, frozen=True, kw_only=True, omit_defaults=True):
    """What feedback needs of a decision, kept for the feedback window (no record for an
    opted-out customer: all defaults)."""

    unit: str | None = None
    known: bool = False
    arm: str | None = None
    offer: str | None = None
    channel: str | None = None
    ts: float = 0.0


class ActionRecord(_Record, frozen=True, kw_only=True, omit_defaults=True):
    """An action of a triggered sequence, for the delivery worker (stream ``nb:actions``)."""

    action_id: str
    unit: str
    sequence: str
    step: int
    decision_id: str
    arm: str
    offer_id: str
    channel: str
    send_at: str  # ISO 8601 with the customer's UTC offset
    ts: float


class SequenceStepRecord(_Record, frozen=True, kw_only=True, omit_defaults=True):
    """One outcome of a sequence step (stream ``nb:log:sequences``)."""

    ts: float
    unit: str
    sequence: str
    sequences_version: str
    instance: str
    step: int
    outcome: Literal["fired", "no_action", "exited", "deferred", "stale"]
    decision_id: str | None = None
    arm: str | None = None
    channel: str | None = None
    offer_id: str | None = None
    action_id: str | None = None
    failed: list[str] | None = None  # conditions that no longer held (exited)
    suppressed: list[str] | None = None  # suppression reasons of the step's decision


_encoder = msgspec.json.Encoder()
_decision = msgspec.json.Decoder(DecisionRecord)
_feedback = msgspec.json.Decoder(FeedbackRecord)
_marker = msgspec.json.Decoder(DecisionMarker)
_action = msgspec.json.Decoder(ActionRecord)
_step = msgspec.json.Decoder(SequenceStepRecord)


def encode(record: msgspec.Struct) -> bytes:
    """JSON bytes of any record (one encoder, built once)."""
    return _encoder.encode(record)


def decode_decision(raw: bytes) -> DecisionRecord:
    return _decision.decode(raw)


def decode_feedback(raw: bytes) -> FeedbackRecord:
    return _feedback.decode(raw)


#: the marker's fields in the order of its MessagePack array
_MARKER_FIELDS = ("unit", "known", "arm", "offer", "channel", "ts")
_msgpack = msgspec.msgpack.Encoder()
_marker_array = msgspec.msgpack.Decoder(
    tuple[str | None, bool, str | None, str | None, str | None, float]
)


def encode_marker(marker: DecisionMarker) -> bytes:
    """The marker Redis keeps per decision for the feedback window: a MessagePack array of
    :data:`_MARKER_FIELDS` (no field names; about 45 bytes for a known customer's action,
    against about 110 as JSON)."""
    return _msgpack.encode(tuple(getattr(marker, f) for f in _MARKER_FIELDS))


def decode_marker(raw: bytes) -> DecisionMarker:
    """A marker as :func:`encode_marker` writes it, or as JSON (earlier versions, and the
    opted-out customer's ``{}``)."""
    if raw[:1] == b"{":
        return _marker.decode(raw)
    unit, known, arm, offer, channel, ts = _marker_array.decode(raw)
    return DecisionMarker(unit=unit, known=known, arm=arm, offer=offer, channel=channel, ts=ts)


def decode_action(raw: bytes) -> ActionRecord:
    return _action.decode(raw)


def decode_sequence_step(raw: bytes) -> SequenceStepRecord:
    return _step.decode(raw)
