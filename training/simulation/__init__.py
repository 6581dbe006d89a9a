"""Policy simulator: replay world customers through the running service, score with the truth.

`python -m training simulate --url http://127.0.0.1:8000 --api-key KEY --customers 20000`

Samples identified customers of the synthetic world (``World.load`` of NEXTBEST_DATA_DIR),
asks the service ``POST /decide`` for each (placement ``campaign``; ``now`` = the world's end
+ 9 h, plus ``day`` days: customer ``i`` of the sample is decided on day ``i % days``) with
bounded concurrency, and scores every returned action with the world's ground truth at the
action's offer, channel and local hour (the hour of ``send_at``, which carries the
customer's UTC offset). A decision without an action scores 0.

Every decision is also scored under reference policies, for the same customer:

| policy | what |
|---|---|
| oracle (revenue) / oracle (margin) | the best (valid offer, consented channel, local hour outside the quiet hours) by expected revenue / margin |
| random | a random valid offer on a random consented channel at a random hour outside the quiet hours |
| popular by email at 10:00 | the most purchased valid offer, by e-mail at 10:00 (0 without e-mail consent) |
| no message (holdout) | 0 incremental |

The oracle and the random policy obey the same quiet hours as the service (``policy.yaml``
or ``--policy``): a message at 3 a.m. is not an option the service has. Frequency caps do
not bind (each customer is decided once).

Figures are expected conversions, revenue and margin (revenue x the offer's margin) per
1,000 decisions, per arm of the service, with the references computed on the customers of
the same arm, and their ratio to the oracle. The comparison of the ``model`` arm against
each reference is paired (same customers): mean difference with a 95 % CLT interval.

**Outcomes and feedback** (unless ``--no-feedback``): for every decision the simulator draws
what happened and reports it with ``POST /feedback``, so the service's decision log can feed
the lift report, off-policy evaluation and retraining like a real deployment's would.
The message's funnel follows the world's truth: ``delivered`` ~ P_DELIVER[channel],
``opened`` ~ p_open(customer, channel, hour), ``clicked`` ~ 0.35, message conversion ~
p_convert_given_click(customer, offer) with value = the offer's price. Customers also buy
without any message: an *organic* purchase in the attribution window
(``--attribution-days``, default 2) has probability ``1 - exp(-days x r)``, where ``r`` is
the customer's purchase rate (non-message purchases per day) over the last 28 days of the
world's history, and its value is the customer's mean purchase value (the population mean
for customers without purchases). Organic purchases happen in every arm and in the
holdout alike, so they cancel in the lift; ``converted`` is reported when either happened,
with the sum of the values. The draws are seeded (``--seed``).

:func:`simulate_inprocess` runs the same scoring with any ``customer_id -> response`` callable
(no HTTP), for tests.

Modules (every public name is importable from ``training.simulation``):

| module | concern |
|---|---|
| ``sampling`` | the customer sample, decision times, valid offers |
| ``scoring`` | actions scored with the world's truth (``Scores``) |
| ``policies`` | quiet hours, the oracle, the reference policies |
| ``outcomes`` | organic purchases, drawn outcomes, ``/feedback`` events, true expected reward |
| ``summary`` | ``SimResult``: per-arm table, paired differences, gap decomposition |
| ``ceiling`` | what the history can show: the channel inferred from past messages (Bayes, the world's prior) |
| ``drivers`` | HTTP (``/decide``, ``/feedback``) and in-process drivers |
"""

from __future__ import annotations

from training.simulation.ceiling import channel_posterior, history_ceiling, load_history
from training.simulation.drivers import (
    fetch_decisions,
    post_feedback,
    simulate_http,
    simulate_inprocess,
)
from training.simulation.outcomes import (
    ORGANIC_LOOKBACK_DAYS,
    draw_outcomes,
    expected_reward,
    feedback_events,
    organic_model,
)
from training.simulation.policies import (
    most_popular_offer,
    quiet_mask,
    reference_policies,
    restricted_oracle,
)
from training.simulation.sampling import (
    decision_time,
    decision_times,
    sample_customers,
    valid_offers,
)
from training.simulation.scoring import Scores, score_responses
from training.simulation.summary import SimResult, choice_mix, decompose_gap, summarize

__all__ = [
    "ORGANIC_LOOKBACK_DAYS",
    "Scores",
    "SimResult",
    "channel_posterior",
    "choice_mix",
    "decision_time",
    "decision_times",
    "decompose_gap",
    "draw_outcomes",
    "expected_reward",
    "feedback_events",
    "fetch_decisions",
    "history_ceiling",
    "load_history",
    "most_popular_offer",
    "organic_model",
    "post_feedback",
    "quiet_mask",
    "reference_policies",
    "restricted_oracle",
    "sample_customers",
    "score_responses",
    "simulate_http",
    "simulate_inprocess",
    "summarize",
    "valid_offers",
]
