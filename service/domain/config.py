"""The decision policy configuration (service/config/policy.yaml), as typed structs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import msgspec
import yaml

from contracts.vocabulary import DEFAULT_CHANNELS

__all__ = ["Arm", "Cap", "ColdStart", "Learning", "PolicyConfig", "QuietHours", "load_policy"]


class _S(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class Placement(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    channels: list[str]
    realtime: bool


class Cap(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    channel: str  # a channel, or "*" for all capped channels together
    max: int
    window_hours: float


class QuietHours(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    channels: list[str]
    start: int  # local hour, inclusive
    end: int  # local hour, exclusive (may wrap past midnight)

    def covers(self, local_hour: int) -> bool:
        if self.start <= self.end:
            return self.start <= local_hour < self.end
        return local_hour >= self.start or local_hour < self.end


class ContactPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    count_on: Literal["decision", "delivered"] = "decision"
    caps: list[Cap] = []
    capped_channels: list[str] = msgspec.field(default_factory=lambda: ["email", "push", "sms"])
    quiet_hours: list[QuietHours] = []
    #: when contact history cannot be read (Redis unreachable): ``suppress`` = no message on
    #: a capped channel (the default: never risk over-messaging), ``allow`` = decide as if
    #: nothing was sent yet and flag the decision ``contact_not_counted``
    caps_unavailable: Literal["suppress", "allow"] = "suppress"


class Arbitration(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    value: Literal["margin", "revenue"] = "margin"
    min_expected_value: float = 0.0
    alternatives: int = 3
    levers: dict[str, float] = {}


class Rule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    offer: str
    lifecycle_in: list[int] | None = None
    min_tenure_days: float | None = None


class Eligibility(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    min_propensity: float = 0.0
    exclude_purchased: bool = True
    exclude_in_cart: bool = False
    rules: list[Rule] = []


class Realtime(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    #: expected-value multiplier for offers in the categories of the open cart (model path)
    cart_boost: float = 1.3


class ColdStart(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Who is decided from priors instead of the models, and how (decision.py ``_score_prior``)."""

    #: a known customer with fewer events than this in the feature rows (page views since
    #: sign-up, ``views_total``, plus messages received, ``sent_<channel>``; no behaviour and
    #: no engagement row counts 0) is a cold start: flagged ``cold_start``, decided from priors
    min_events: int = 3
    #: the local hours a cold-start send may take when nothing says when the customer is
    #: active: start inclusive, end exclusive, in the customer's time zone (the quiet hours
    #: still apply); the population's best open hour inside this window is used
    send_hours_start: int = 9
    send_hours_end: int = 19
    #: a customer seen (any event) within this many hours is active at that local hour: a
    #: cold-start send goes out at that hour (when the quiet hours allow it)
    session_hours: float = 2.0


class Learning(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the next decision learns from a customer's responses (``POST /feedback``), within
    the second: see service/realtime/responses.py."""

    #: a dismissed offer is not offered to the customer again for this long
    dismiss_cooldown_hours: float = 72.0
    #: expected-value multiplier of offers in a category whose offer the customer clicked or
    #: bought (in the last ``window_days``)
    category_boost: float = 1.3
    #: P(open | channel) of the models, updated with the customer's deliveries and opens on
    #: the channel since the engagement features were computed: (k p + opens) / (k + delivered)
    channel_prior_weight: float = 8.0
    #: responses older than this are forgotten
    window_days: float = 30.0


class LogConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    #: log every candidate's factored score with each decision (what off-policy evaluation of
    #: other offers, channels and send times needs; about 1.5 KB per decision)
    candidates: bool = True


class Arm(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    share: float
    policy: Literal["model", "popular", "explore"] = "model"
    fixed_hour: int | None = None
    #: ``explore`` arms (see service/domain/decision.py ``_explore``): the share of decisions
    #: that take a random (offer, channel, allowed hour) action instead of the best one: a
    #: channel uniformly, then one of its allowed hours, then one of the ``explore_top`` best
    #: offers there (0: every offer above ``min_expected_value``)
    epsilon: float = 0.0
    explore_top: int = 0
    #: the most expected value (margin or revenue units, as ``arbitration.value``) one
    #: decision may give up to exploration: epsilon is lowered where exploring costs more
    #: (unset: no cap). Every decision logs the cost it took.
    explore_budget: float | None = None


class Experiment(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    arms: list[Arm]


class Experiments(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    salt: str
    buckets: int = 10_000
    global_holdout: float = 0.0
    control_action: str = "none"
    default: str | None = None
    definitions: dict[str, Experiment] = {}


class PolicyConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    version: str
    placements: dict[str, Placement]
    channel_fallback_order: list[str]
    contact_policy: ContactPolicy
    arbitration: Arbitration
    eligibility: Eligibility
    experiments: Experiments
    realtime: Realtime = msgspec.field(default_factory=Realtime)
    cold_start: ColdStart = msgspec.field(default_factory=ColdStart)
    learning: Learning = msgspec.field(default_factory=Learning)
    log: LogConfig = msgspec.field(default_factory=LogConfig)

    def validate(self, channels: Sequence[str] = DEFAULT_CHANNELS) -> PolicyConfig:
        """Check the policy against itself and the deployment's ``channels``."""
        for name, p in self.placements.items():
            bad = set(p.channels) - set(channels)
            if bad:
                raise ValueError(f"placement {name}: unknown channels {sorted(bad)}")
        for exp_name, exp in self.experiments.definitions.items():
            total = sum(a.share for a in exp.arms)
            if abs(total - 1.0) > 1e-9:
                raise ValueError(f"experiment {exp_name}: arm shares sum to {total}, not 1")
            for a in exp.arms:
                if not 0.0 <= a.epsilon <= 1.0 or a.explore_top < 0:
                    raise ValueError(
                        f"experiment {exp_name}, arm {a.name}: epsilon must be in [0, 1] "
                        "and explore_top >= 0"
                    )
                if a.explore_budget is not None and not a.explore_budget > 0:
                    raise ValueError(
                        f"experiment {exp_name}, arm {a.name}: explore_budget must be > 0"
                    )
                if a.policy == "explore" and a.epsilon == 0.0:
                    raise ValueError(
                        f"experiment {exp_name}, arm {a.name}: an explore arm needs epsilon > 0"
                    )
        cs = self.cold_start
        if cs.min_events < 0 or not (0 <= cs.send_hours_start < cs.send_hours_end <= 24):
            raise ValueError(
                "cold_start: min_events must be >= 0 and 0 <= send_hours_start < "
                "send_hours_end <= 24"
            )
        lr = self.learning
        if min(lr.dismiss_cooldown_hours, lr.channel_prior_weight) < 0 or not (
            lr.category_boost > 0 and lr.window_days > 0
        ):
            raise ValueError(
                "learning: dismiss_cooldown_hours and channel_prior_weight must be >= 0, "
                "category_boost and window_days > 0"
            )
        if not 0 <= self.experiments.global_holdout < 1:
            raise ValueError("experiments.global_holdout must be in [0, 1)")
        d = self.experiments.default
        if d is not None and d not in self.experiments.definitions:
            raise ValueError(f"experiments.default {d!r} is not defined")
        return self


DEFAULT_POLICY = Path(__file__).resolve().parent.parent / "config" / "policy.yaml"


def load_policy(
    path: Path | None = None, channels: Sequence[str] = DEFAULT_CHANNELS
) -> PolicyConfig:
    raw = yaml.safe_load((path or DEFAULT_POLICY).read_text())
    return msgspec.convert(raw, PolicyConfig).validate(channels)
