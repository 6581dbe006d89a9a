"""One value that carries a decision through the engine's stages (instead of long argument
lists): what was asked, who it is for, what was read and what was decided."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from contracts.features import FeatureSpec
from service.adapters.models import ModelSet
from service.adapters.redis_store import CustomerState
from service.domain.allocation import Allocation
from service.domain.decision import Decision
from service.realtime.reminders import Reminder
from service.realtime.service import RealtimeContext
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
    #: what the real-time layer contributed (None: no real-time layer, or it failed)
    rt: RealtimeContext | None = None
    #: ``context.remind``: offer id -> what it reminds of (None: not a reminder)
    reminders: dict[str, Reminder] | None = None
    #: seconds per stage (read, decide, commit) for the metrics
    stages: dict[str, float] = field(default_factory=dict)

    # What the rest of the engine reads of the real-time layer's result (``rt``), with the
    # values a decision without it gets.
    @property
    def realtime(self) -> dict[str, Any] | None:
        """What the real-time layer saw (logged, and shown with ``explain``); the decision
        adds its ``responses`` entry to this dict."""
        return self.rt.log if self.rt is not None else None

    @property
    def boost(self) -> frozenset[str]:
        """Categories of the open cart (the model path boosts their expected value)."""
        return self.rt.boost_categories if self.rt is not None else frozenset()

    @property
    def session_ts(self) -> float | None:
        """Epoch seconds of the unit's last event, from the real-time row (None: unknown)."""
        return self.rt.session_ts if self.rt is not None else None

    @property
    def cart(self) -> tuple[str, ...]:
        """The open cart's items (offers or not)."""
        return self.rt.cart if self.rt is not None else ()

    @property
    def cart_categories(self) -> Mapping[str, str]:
        """The categories known of the open cart's items."""
        return self.rt.cart_categories if self.rt is not None else {}

    @property
    def responses(self) -> Sequence[tuple[str, float]]:
        """The unit's responses to messages, (member, time)."""
        return self.rt.responses if self.rt is not None else ()
