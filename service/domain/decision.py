"""The decision: consent, eligibility, contact policy, scoring, arbitration, holdout.

Pure: everything the decision depends on is passed in (features, contact history, clock,
allocation, a uniform random number for exploration), and models are reached through the
small :class:`Scorer` protocol, so the whole thing is unit-tested without a server.

Expected value of offer o on channel ch at local hour h::

    p(o, ch, h) = P_channel(open | ch) * lift(h) * P_propensity(convert | open, o, ch)
    EV          = p * value(o) * lever(o)

where lift(h) = P_send_time(h) / mean over the day.

**Cold start.** Anonymous visitors, customers without feature rows and known customers with
too little history (fewer than ``cold_start.min_events`` page views since sign-up plus
messages received, policy.yaml) are decided from priors instead (flagged ``cold_start``):
what is known still counts (consents choose the channels, the time zone the local hour,
the session's cart its categories); P(open | channel) is the population's open rate of the
channel; the send hour is the population's best open hour *within local daytime*
(``cold_start.send_hours_start``-``send_hours_end``), or the local hour the customer was
last active in a session (``session_ts``, within ``cold_start.session_hours``), never a
quiet hour.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from contracts.features import DEFAULT_SPEC, FeatureSpec
from service.domain.allocation import Allocation
from service.domain.config import Arm, PolicyConfig
from service.domain.contact import (
    blocked_by_caps,
    in_quiet_hours,
    local_hour,
    next_allowed_hours,
)
from service.features.vectors import channel_matrix, propensity_matrix, send_time_matrix

__all__ = [
    "Choice",
    "Decision",
    "DecisionInput",
    "Exploration",
    "Offer",
    "Priors",
    "Scorer",
    "Scores",
    "Suppression",
    "decide",
    "history_events",
]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
#: multiplier for offers in the category of the session's cart or trigger (cold start only)
SESSION_CATEGORY_BOOST = 1.5


class Scorer(Protocol):
    """The three models (ONNX in production, hand-written fakes in unit tests)."""

    def propensity(self, x: F32) -> F64: ...
    def send_time(self, x: F32) -> F64: ...
    def channel(self, x: F32) -> F64: ...


@dataclass(frozen=True, slots=True)
class Offer:
    offer_id: str
    name: str
    category: str
    category_idx: int
    price: float
    margin: float
    valid_from: float  # epoch seconds
    valid_to: float


@dataclass(frozen=True, slots=True)
class Priors:
    """Population priors for cold start, computed at training time (model bundle)."""

    hour_open_rate: Sequence[float]
    best_hour: int
    channel_open_rate: Mapping[str, float]
    channel_order: Sequence[str]
    offer_conversion_rate: Mapping[str, float]
    offer_order: Sequence[str]


@dataclass(frozen=True, slots=True)
class Suppression:
    reason: str  # no_consent | frequency_cap | quiet_hours | ineligible | holdout | below_threshold
    offer_id: str | None = None
    channel: str | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Choice:
    offer: Offer
    channel: str
    send_at: float  # epoch seconds
    local_hour: int
    probability: float  # expected conversion probability
    expected_value: float
    propensity: float  # P(convert | open), model output (cold start: prior)
    channel_score: float
    hour_lift: float


@dataclass(frozen=True, slots=True)
class DecisionInput:
    unit_id: str
    known: bool  # an identified customer (customer_id given)
    features: Mapping[str, F64] | None  # raw online features (arrays of length 1); None = cold
    now: float
    placement: str
    channels: Sequence[str] | None  # the caller's allowed channels
    candidates: Sequence[Offer]
    allocation: Allocation
    contact_history: Sequence[tuple[float, str]] | None  # None = unknown (store unreachable)
    purchased: frozenset[str] = frozenset()
    cart_categories: frozenset[str] = frozenset()
    tz_name: str | None = None
    uniform: float = 0.5  # U(0,1) for exploration, derived from the decision id
    #: categories of the customer's open cart (real-time features): the model path
    #: multiplies their expected value by ``policy.realtime.cart_boost``
    boost_categories: frozenset[str] = frozenset()
    #: epoch seconds of the customer's last event (real-time row; None: unknown)
    session_ts: float | None = None
    #: learned from the customer's responses (service/realtime/responses.py): offers
    #: dismissed within the cooldown (offer -> when), categories clicked or bought from,
    #: (delivered, opened) per channel since the engagement features
    dismissed: Mapping[str, float] = field(default_factory=dict)
    responded_categories: frozenset[str] = frozenset()
    channel_responses: Mapping[str, tuple[int, int]] = field(default_factory=dict)


@dataclass(slots=True)
class Scores:
    """Every candidate's score in factored form: the expected conversion of offer ``o`` on
    channel ``c`` at local hour ``h`` is ``p_channel[c] * hour_lift[h] * p_convert[o, c]``
    and its expected value that times ``value[o]``; ``slots[c]`` are the send times the contact
    policy allows on ``c``. From these the log can rebuild the score of any (offer, channel,
    hour), which is what off-policy evaluation of another policy needs."""

    offers: list[Offer]
    channels: list[str]
    p_channel: F64  # (n_channels,) P(open | channel), or the population rate (cold start)
    hour_lift: F64  # (24,) P(open | local hour) / its daily mean
    p_convert: F64  # (n_offers, n_channels) P(convert | open), or the prior
    slots: dict[str, list[tuple[float, int]]]
    value: F64 = field(default_factory=lambda: np.zeros(0))  # (n_offers,) value x levers
    #: the channel score shown with a choice when it is not a factor of the score (the
    #: population open rate, cold start); None: ``p_channel``
    channel_score: F64 | None = None


@dataclass(frozen=True, slots=True)
class Exploration:
    """How the explore arm chose: its exploration rate here and the expected value it gave up
    (``epsilon`` x (EV of the greedy action - EV expected under the exploration draw))."""

    epsilon: float
    cost: float
    actions: int  # (offer, channel, hour) actions the exploration draw could pick


@dataclass(slots=True)
class Decision:
    action: Choice | None
    alternatives: list[Choice] = field(default_factory=list)
    suppressed: list[Suppression] = field(default_factory=list)
    would_have: Choice | None = None  # the treated action a holdout unit did not get
    cold_start: bool = False
    opted_out: bool = False
    degraded: list[str] = field(default_factory=list)
    choice_probability: float = 1.0  # P(this action | context) under the policy
    channel_scores: dict[str, float] = field(default_factory=dict)
    hour_scores: list[float] = field(default_factory=list)
    policy: str = "model"
    #: seconds spent building model inputs and scoring them (the model path only)
    matrices_s: float = 0.0
    scoring_s: float = 0.0
    #: every candidate's score (None when nothing was scored)
    scores: Scores | None = None
    exploration: Exploration | None = None


def _feature(features: Mapping[str, F64] | None, name: str) -> float:
    if features is None or name not in features:
        return float("nan")
    return float(features[name][0])


def _value(cfg: PolicyConfig, offer: Offer) -> float:
    base = offer.price * offer.margin if cfg.arbitration.value == "margin" else offer.price
    return base * cfg.arbitration.levers.get(offer.offer_id, 1.0)


def _channels(
    inp: DecisionInput, cfg: PolicyConfig, out: Decision, outbound: Sequence[str]
) -> list[str]:
    """The placement's channels the caller allows and the customer consents to.

    The consent rule (:mod:`contracts.vocabulary`): an *outbound* channel needs the known
    customer's ``consent_<channel>`` = 1 (unknown consent, an anonymous visitor, missing or
    stale features: no); an in-session channel (``web``, ``in_app``) is used unless the
    customer's ``consent_<channel>`` is known and not 1 (an anonymous visitor or a customer
    without a profile gets the generic in-session experience).
    """
    placement = cfg.placements[inp.placement]
    allowed = [c for c in placement.channels if inp.channels is None or c in inp.channels]
    result = []
    for ch in allowed:
        consent = _feature(inp.features, f"consent_{ch}") if inp.known else float("nan")
        # outbound reaches a person outside a session: it needs explicit consent; a channel
        # shown in the session is refused only explicitly
        refused = consent != 1.0 if ch in outbound else not np.isnan(consent) and consent != 1.0
        if refused:
            detail = (
                "consent unknown: features unavailable"
                if inp.known and inp.features is None
                else "no consent for this channel"
            )
            out.suppressed.append(Suppression("no_consent", channel=ch, detail=detail))
            continue
        result.append(ch)
    return result


def _contact_policy(
    inp: DecisionInput, cfg: PolicyConfig, channels: list[str], out: Decision
) -> dict[str, list[tuple[float, int]]]:
    """channel -> candidate send slots (epoch, local hour) that respect caps and quiet hours."""
    policy = cfg.contact_policy
    realtime = cfg.placements[inp.placement].realtime
    tz = _feature(inp.features, "tz_offset")
    tz_off = None if np.isnan(tz) else tz
    slots: dict[str, list[tuple[float, int]]] = {}
    for ch in channels:
        if ch in policy.capped_channels:
            if inp.contact_history is None and policy.caps_unavailable == "suppress":
                out.suppressed.append(
                    Suppression("frequency_cap", channel=ch, detail="caps could not be checked")
                )
                continue
            cap = blocked_by_caps(policy, inp.contact_history or (), ch, inp.now)
            if cap is not None:
                out.suppressed.append(
                    Suppression(
                        "frequency_cap",
                        channel=ch,
                        detail=f"max {cap.max} per {cap.window_hours:g}h ({cap.channel})",
                    )
                )
                continue
        if realtime:
            h = local_hour(inp.now, tz_off, inp.tz_name)
            if in_quiet_hours(policy, ch, h):
                out.suppressed.append(
                    Suppression("quiet_hours", channel=ch, detail=f"local hour {h}")
                )
                continue
            slots[ch] = [(inp.now, h)]
        else:
            s = next_allowed_hours(policy, ch, inp.now, tz_off, inp.tz_name)
            if not s:
                out.suppressed.append(
                    Suppression("quiet_hours", channel=ch, detail="no allowed hour in 24h")
                )
                continue
            slots[ch] = s
    return slots


def _eligible(inp: DecisionInput, cfg: PolicyConfig, out: Decision) -> list[Offer]:
    el = cfg.eligibility
    rules: dict[str, list[object]] = {}
    for r in el.rules:
        rules.setdefault(r.offer, []).append(r)
    lifecycle = _feature(inp.features, "lifecycle")
    signup = _feature(inp.features, "signup_day")
    tenure = inp.now / 86400.0 - signup
    result = []
    for o in inp.candidates:
        why = ""
        if not o.valid_from <= inp.now <= o.valid_to:
            why = "outside validity window"
        elif el.exclude_purchased and o.offer_id in inp.purchased:
            why = "already purchased"
        elif el.exclude_in_cart and o.category in inp.cart_categories:
            why = "already in cart"
        elif o.offer_id in inp.dismissed:
            ago = (inp.now - inp.dismissed[o.offer_id]) / 3600.0
            why = f"dismissed {ago:.1f} h ago (cooldown {cfg.learning.dismiss_cooldown_hours:g} h)"
        else:
            for r in cfg.eligibility.rules:
                if r.offer != o.offer_id:
                    continue
                if r.lifecycle_in is not None and (
                    np.isnan(lifecycle) or int(lifecycle) not in r.lifecycle_in
                ):
                    why = f"lifecycle not in {r.lifecycle_in}"
                if r.min_tenure_days is not None and not tenure >= r.min_tenure_days:
                    why = f"tenure below {r.min_tenure_days:g} days"
        if why:
            out.suppressed.append(Suppression("ineligible", offer_id=o.offer_id, detail=why))
        else:
            result.append(o)
    return result


def _best_slot(
    slots: list[tuple[float, int]],
    hour_lift: Sequence[float] | npt.NDArray[np.float64],
    fixed_hour: int | None,
) -> tuple[float, int]:
    if fixed_hour is not None:
        for ts, h in slots:
            if h == fixed_hour:
                return ts, h
    return max(slots, key=lambda s: (hour_lift[s[1]], -s[0]))


def _choices(scores: Scores, fixed_hour: int | None) -> list[Choice]:
    """One choice per (offer, channel), at the channel's best allowed hour (or ``fixed_hour``)."""
    lift = scores.hour_lift
    chosen = {c: _best_slot(scores.slots[c], lift, fixed_hour) for c in scores.channels}
    out = []
    for i, o in enumerate(scores.offers):
        for j, c in enumerate(scores.channels):
            ts, h = chosen[c]
            pc, pp, lh = float(scores.p_channel[j]), float(scores.p_convert[i, j]), float(lift[h])
            shown = pc if scores.channel_score is None else float(scores.channel_score[j])
            out.append(Choice(o, c, ts, h, pc * lh * pp, 0.0, pp, shown, lh))
    return out


def _score_model(
    inp: DecisionInput,
    spec: FeatureSpec,
    scorer: Scorer,
    offers: list[Offer],
    slots: dict[str, list[tuple[float, int]]],
    out: Decision,
) -> Scores:
    raw = inp.features
    assert raw is not None
    now_day = inp.now / 86400.0
    chans = list(slots)
    ch_idx = np.array([spec.channel_index[c] for c in chans], dtype=np.int64)
    zero1 = np.zeros(len(chans), dtype=np.int64)
    hours = np.arange(24, dtype=np.int64)
    t0 = time.perf_counter()
    x_ch = channel_matrix(spec, raw, now_day, zero1, ch_idx)
    x_h = send_time_matrix(spec, raw, now_day, np.zeros(24, dtype=np.int64), hours)
    t1 = time.perf_counter()
    p_ch = scorer.channel(x_ch)
    p_h = scorer.send_time(x_h)
    t2 = time.perf_counter()
    lift = p_h / max(float(p_h.mean()), 1e-12)
    out.channel_scores = {c: float(p) for c, p in zip(chans, p_ch, strict=True)}
    out.hour_scores = [float(x) for x in p_h]
    n_o, n_c = len(offers), len(chans)
    o_rep = np.repeat(np.arange(n_o), n_c)
    c_rep = np.tile(ch_idx, n_o)
    cat = np.array([o.category_idx for o in offers], dtype=np.int64)[o_rep]
    price = np.array([o.price for o in offers])[o_rep]
    margin = np.array([o.margin for o in offers])[o_rep]
    t3 = time.perf_counter()
    x = propensity_matrix(
        spec, raw, now_day, np.zeros(n_o * n_c, dtype=np.int64), cat, price, margin, c_rep
    )
    t4 = time.perf_counter()
    p_prop = scorer.propensity(x).reshape(n_o, n_c)
    t5 = time.perf_counter()
    out.matrices_s = (t1 - t0) + (t4 - t3)
    out.scoring_s = (t2 - t1) + (t5 - t4)
    return Scores(offers, chans, np.asarray(p_ch, dtype=np.float64), lift, p_prop, slots)


def history_events(features: Mapping[str, F64] | None) -> float:
    """Events in a customer's feature rows: page views since sign-up plus messages received
    (0 when the behaviour and engagement rows are missing)."""
    if features is None:
        return 0.0
    names = ["views_total", *(k for k in features if k.startswith("sent_"))]
    vals = [_feature(features, n) for n in names]
    return float(sum(v for v in vals if not np.isnan(v)))


#: the factor of a non-daytime hour in a cold-start prior: used only when no daytime hour is
#: allowed (quiet hours), never in preference to one
OFF_HOURS_FACTOR = 1e-3


def _prior_lift(inp: DecisionInput, cfg: PolicyConfig, priors: Priors) -> F64:
    """Cold start: the population's open rate by local hour, kept to local daytime, or the
    hour the customer was active in a session (see the module docstring)."""
    cs = cfg.cold_start
    rates = np.asarray(priors.hour_open_rate, dtype=np.float64)
    finite = np.isfinite(rates)
    if not finite.all():  # hours the data never showed: the population's mean, no lift
        rates = np.where(finite, rates, float(rates[finite].mean()) if finite.any() else 1.0)
    lift = rates / max(float(rates.mean()), 1e-12)
    day = np.zeros(24, dtype=bool)
    day[cs.send_hours_start : cs.send_hours_end] = True
    lift = np.where(day, lift, lift * OFF_HOURS_FACTOR)
    ts = inp.session_ts
    if ts is not None and ts > 0 and 0 <= inp.now - ts <= cs.session_hours * 3600.0:
        tz = _feature(inp.features, "tz_offset")
        h = local_hour(ts, None if np.isnan(tz) else tz, inp.tz_name)
        lift[h] = float(lift.max()) * 1.25  # active then: the best hour we know of
    out: F64 = lift
    return out


def _score_prior(
    inp: DecisionInput,
    cfg: PolicyConfig,
    priors: Priors,
    offers: list[Offer],
    slots: dict[str, list[tuple[float, int]]],
) -> Scores:
    lift = _prior_lift(inp, cfg, priors)
    chans = list(slots)
    p_ch = np.array([priors.channel_open_rate.get(c, 0.0) for c in chans], dtype=np.float64)
    base = np.array(
        [
            priors.offer_conversion_rate.get(o.offer_id, 0.0)
            * (SESSION_CATEGORY_BOOST if o.category in inp.cart_categories else 1.0)
            for o in offers
        ],
        dtype=np.float64,
    )
    # the prior's P(convert | open) does not depend on the channel (one column per channel);
    # the population's open rate of each channel is the channel factor
    p_conv = np.repeat(base[:, None], len(chans), axis=1)
    return Scores(offers, chans, p_ch, lift, p_conv, slots)


def _lever(
    cfg: PolicyConfig,
    offer: Offer,
    boost: frozenset[str],
    responded: frozenset[str] = frozenset(),
) -> float:
    """The value of converting ``offer`` here: margin or price, levers, the open cart's boost,
    the boost of a category the customer responded to."""
    lever = cfg.realtime.cart_boost if offer.category in boost else 1.0
    if offer.category in responded:
        lever *= cfg.learning.category_boost
    return _value(cfg, offer) * lever


def _with_value(c: Choice, value: float) -> Choice:
    return Choice(
        c.offer, c.channel, c.send_at, c.local_hour, c.probability,
        c.probability * value, c.propensity, c.channel_score, c.hour_lift,
    )  # fmt: skip


def _learn_channels(inp: DecisionInput, cfg: PolicyConfig, scores: Scores, out: Decision) -> None:
    """P(open | channel) updated with the customer's responses since the features:
    (k p + opens) / (k + delivered), k = ``learning.channel_prior_weight``."""
    k = cfg.learning.channel_prior_weight
    for j, c in enumerate(scores.channels):
        if c not in inp.channel_responses:
            continue
        delivered, opened = inp.channel_responses[c]
        p = float(scores.p_channel[j])
        scores.p_channel[j] = (k * p + opened) / (k + delivered) if k + delivered > 0 else p
        if c in out.channel_scores:
            out.channel_scores[c] = float(scores.p_channel[j])


def _popular(cfg: PolicyConfig, priors: Priors, choices: list[Choice]) -> Choice | None:
    """The simple baseline arm: the most popular eligible offer, by the fallback channel order."""
    by_offer = {o: i for i, o in enumerate(priors.offer_order)}
    order = {c: i for i, c in enumerate(cfg.channel_fallback_order)}
    ranked = sorted(
        choices,
        key=lambda c: (by_offer.get(c.offer.offer_id, 10**6), order.get(c.channel, 99)),
    )
    return ranked[0] if ranked else None


def _explore(
    scores: Scores, greedy: Choice, min_p: float, threshold: float, arm: Arm, u: float
) -> tuple[Choice, float, Exploration]:
    """Epsilon-greedy over every (offer, channel, allowed hour) action, within a budget.

    With probability ``1 - eps`` the greedy action; with probability ``eps`` a draw from ``q``:
    a channel uniformly among those with an action, then one of its allowed hours uniformly,
    then an offer uniformly among the ``explore_top`` best there (all when 0), every action
    above ``min_propensity`` and ``min_expected_value``. So every channel and every allowed hour
    keeps a known, positive probability: channels a customer was never sent and send times the
    model would not pick can be learned and evaluated off-policy.

    ``eps`` is the arm's ``epsilon``, lowered when needed so that the expected value given up,
    ``eps * (EV(greedy) - E_q[EV])``, stays within the arm's ``explore_budget`` (value units
    per decision; unset: no cap). ``u`` is one U(0, 1) draw independent of the context (from
    the decision id): ``u < eps`` explores and ``u / eps`` (again uniform) walks ``q``. Returns
    the action, the exact probability of it under this policy in this context (what
    off-policy evaluation divides by), ``(1 - eps) [a = greedy] + eps q(a)``, and the cost.
    """
    lift, value = scores.hour_lift, scores.value
    n_o, n_ch = scores.p_convert.shape
    # (channel, local hour) -> send time, for the hours the contact policy allows
    when: list[dict[int, float]] = [{h: ts for ts, h in scores.slots[c]} for c in scores.channels]
    allowed = np.zeros((n_ch, 24), dtype=bool)
    for j, slots in enumerate(when):
        allowed[j, list(slots)] = True
    # every (offer, channel, hour): probability, value, and whether exploration may pick it
    p = scores.p_convert[:, :, None] * (scores.p_channel[:, None] * lift[None, :])[None]
    ev = p * value[:, None, None]
    ok = (p >= min_p) & (ev >= threshold) & allowed[None]
    if 0 < arm.explore_top < n_o:
        order = np.argsort(np.where(ok, -ev, np.inf), axis=0, kind="stable")
        top = np.zeros_like(ok)
        np.put_along_axis(top, order[: arm.explore_top], True, axis=0)
        ok &= top
    n_offers = ok.sum(axis=0)  # (channel, hour)
    n_hours = (n_offers > 0).sum(axis=1)  # per channel
    channels = np.flatnonzero(n_hours)
    n_c = len(channels)
    q_of = np.zeros((n_ch, 24))  # the draw's probability of each offer at (channel, hour)
    if n_c:
        q_of[channels] = 1.0 / (n_c * n_hours[channels, None] * np.maximum(n_offers[channels], 1))
    q_of = np.where(n_offers > 0, q_of, 0.0)
    expected = float((np.where(ok, ev, 0.0) * q_of[None]).sum())
    gap = max(greedy.expected_value - expected, 0.0)
    eps = arm.epsilon
    if arm.explore_budget is not None and gap > 0:
        eps = min(eps, arm.explore_budget / gap)

    def q(c: Choice) -> float:
        """The exploration draw's probability of an action (0 outside its support)."""
        j = scores.channels.index(c.channel)
        h = c.local_hour
        if when[j].get(h) != c.send_at:
            return 0.0
        i = scores.offers.index(c.offer)
        return float(q_of[j, h]) if ok[i, j, h] else 0.0

    chosen = greedy
    if u < eps and n_c:
        v = u / eps
        k = min(int(v * n_c), n_c - 1)
        v = v * n_c - k
        j = int(channels[k])
        hours = np.flatnonzero(n_offers[j])  # in local-hour order (a fixed order is enough)
        s = min(int(v * len(hours)), len(hours) - 1)
        v = v * len(hours) - s
        h = int(hours[s])
        offers = np.flatnonzero(ok[:, j, h])
        i = int(offers[min(int(v * len(offers)), len(offers) - 1)])
        shown = scores.p_channel if scores.channel_score is None else scores.channel_score
        chosen = Choice(
            scores.offers[i], scores.channels[j], when[j][h], h, float(p[i, j, h]),
            float(ev[i, j, h]), float(scores.p_convert[i, j]), float(shown[j]), float(lift[h]),
        )  # fmt: skip
    same = (chosen.offer.offer_id, chosen.channel, chosen.send_at) == (
        greedy.offer.offer_id, greedy.channel, greedy.send_at,
    )  # fmt: skip
    prob = (1.0 - eps) * same + eps * q(chosen)
    actions = int(n_offers.sum())
    return chosen, prob, Exploration(epsilon=eps, cost=eps * gap, actions=actions)


def decide(
    inp: DecisionInput,
    cfg: PolicyConfig,
    scorer: Scorer | None,
    priors: Priors,
    spec: FeatureSpec = DEFAULT_SPEC,
) -> Decision:
    """The decision for one request; ``spec``: the feature names the scorer's models were
    trained with (their vocabulary: channels, categories, which channels are outbound)."""
    out = Decision(action=None)
    arm = inp.allocation.config
    out.policy = arm.policy if arm is not None else "model"
    fixed_hour = arm.fixed_hour if arm is not None else None
    if inp.known and _feature(inp.features, "opted_out") == 1.0:
        out.opted_out = True
        out.suppressed.append(Suppression("no_consent", detail="opted out of all marketing"))
        return out
    out.cold_start = (
        inp.features is None
        or scorer is None
        or (inp.known and history_events(inp.features) < cfg.cold_start.min_events)
    )
    if inp.contact_history is None:
        out.degraded.append("contact_history_unavailable")
    # only the channels the models were trained on (a placement may list others)
    channels = [
        c for c in _channels(inp, cfg, out, spec.vocabulary.outbound) if c in spec.channel_index
    ]
    slots = _contact_policy(inp, cfg, channels, out)
    offers = _eligible(inp, cfg, out)
    if not slots or not offers:
        return out
    if out.cold_start:
        scores = _score_prior(inp, cfg, priors, offers, slots)
    else:
        assert scorer is not None
        scores = _score_model(inp, spec, scorer, offers, slots, out)
    if inp.channel_responses:
        _learn_channels(inp, cfg, scores, out)
    boost = inp.boost_categories if not out.cold_start else frozenset()  # cold start: own boost
    responded = inp.responded_categories
    scores.value = np.array([_lever(cfg, o, boost, responded) for o in offers], dtype=np.float64)
    out.scores = scores
    values = {o.offer_id: float(v) for o, v in zip(offers, scores.value, strict=True)}
    choices = [_with_value(c, values[c.offer.offer_id]) for c in _choices(scores, fixed_hour)]
    min_p = cfg.eligibility.min_propensity
    kept = []
    for c in choices:
        if not math.isfinite(c.probability):  # a broken model or prior: said, never silent
            out.suppressed.append(
                Suppression("ineligible", c.offer.offer_id, c.channel, "score is not a number")
            )
        elif c.probability < min_p:
            out.suppressed.append(
                Suppression(
                    "ineligible", c.offer.offer_id, c.channel,
                    f"propensity {c.probability:.2g} below minimum {min_p:g}",
                )
            )  # fmt: skip
        else:
            kept.append(c)
    kept.sort(key=lambda c: c.expected_value, reverse=True)
    # one entry per offer: its best channel
    seen: set[str] = set()
    ranked = []
    for c in kept:
        if c.offer.offer_id not in seen:
            seen.add(c.offer.offer_id)
            ranked.append(c)
    threshold = cfg.arbitration.min_expected_value
    above = [c for c in ranked if c.expected_value >= threshold]
    if inp.allocation.holdout and not above:
        _holdout(inp, cfg, out, None, kept)
        return out
    for c in ranked:
        if c.expected_value < threshold:
            out.suppressed.append(
                Suppression(
                    "below_threshold", c.offer.offer_id, c.channel,
                    f"expected value {c.expected_value:.4f} < {threshold:g}",
                )
            )  # fmt: skip
    if not above:
        return out
    best: Choice | None = above[0]
    if out.policy == "popular":
        best = _popular(cfg, priors, [c for c in kept if c.expected_value >= threshold])
    elif out.policy == "explore" and arm is not None and arm.epsilon > 0 and best is not None:
        best, out.choice_probability, out.exploration = _explore(
            scores, best, min_p, threshold, arm, inp.uniform
        )
    assert best is not None
    rest = [c for c in above if c is not best][: cfg.arbitration.alternatives]
    if inp.allocation.holdout:
        _holdout(inp, cfg, out, best, kept)
        return out
    out.action = best
    out.alternatives = rest
    return out


def _holdout(
    inp: DecisionInput, cfg: PolicyConfig, out: Decision, best: Choice | None, kept: list[Choice]
) -> None:
    """A holdout unit gets the control action, whatever the model would have chosen.

    ``experiments.control_action``: ``none`` (no message), or an offer id shown on
    real-time placements when it is eligible there (the site's default banner, say). The
    treated action the unit would have got is kept in ``would_have`` for the log.
    """
    out.policy = "control"
    out.choice_probability = 1.0
    out.would_have = best
    if best is not None:
        out.suppressed.append(
            Suppression("holdout", best.offer.offer_id, best.channel, "global holdout: control")
        )
    control = cfg.experiments.control_action
    if control == "none" or not cfg.placements[inp.placement].realtime:
        return
    shown = [c for c in kept if c.offer.offer_id == control]
    if shown:
        out.action = max(shown, key=lambda c: c.expected_value)
    else:
        out.suppressed.append(
            Suppression("ineligible", control, None, "control action not eligible here")
        )
