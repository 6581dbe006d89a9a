"""One value that carries a decision through the engine's stages (instead of long argument
lists): what was asked, who it is for, what was read and what was decided."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from contracts.features import FeatureSpec
from service.adapters.models import ModelSet
from service.adapters.redis_store import CustomerState
from service.domain.allocation import Allocation
from service.domain.decision import Decision
from service.realtime.reminders import Reminder
from service.schemas import DecideRequest

__all__ = ["DecideContext"]


@dataclass(slots=True)
class DecideContext:
    req: DecideRequest  # the request as decided (identity resolved by the real-time layer)
    models: ModelSet | None  # one model set for the whole request, even if a swap happens
    spec: FeatureSpec  # the feature names of those models (or the default)
    decision_id: str
    unit: str  # customer id or anonymous id
    known: bool  # an identified customer
    now: float  # epoch seconds
    allocation: Allocation
    degraded: list[str] = field(default_factory=list)
    state: CustomerState | None = None
    decision: Decision | None = None
    #: what the real-time layer saw (logged, and shown with ``explain``)
    realtime: dict[str, Any] | None = None
    #: categories of the open cart (the model path boosts their expected value)
    boost: frozenset[str] = frozenset()
    #: epoch seconds of the unit's last event, from the real-time row (None: unknown)
    session_ts: float | None = None
    #: the open cart's items (offers or not) and their categories, from the real-time layer
    cart: tuple[str, ...] = ()
    cart_categories: dict[str, str] = field(default_factory=dict)
    #: the unit's responses to messages, (member, time), from the real-time layer
    responses: list[tuple[str, float]] = field(default_factory=list)
    #: ``context.remind``: offer id -> what it reminds of (None: not a reminder)
    reminders: dict[str, Reminder] | None = None
    #: seconds per stage (read, decide, commit) for the metrics
    stages: dict[str, float] = field(default_factory=dict)
