"""Off-policy evaluation: the value of a candidate policy from logs of another one.

| module | concern |
|---|---|
| ``estimators`` | IPS, SNIPS, IPS-clip, DM, DR, SNDR, DR-clip, Switch-DR, DR-OS; SLOPE tuning; CLT and bootstrap intervals clipped to the reward's range; ESS |
| ``reward`` | reward models (per-action mean, LightGBM on context + action features), K-fold cross-fitted, fallback reported |
| ``policies`` | candidate policies as action distributions over the catalogue; support checks |
| ``frame`` | a log in the documented schema -> one row per policy and estimator; the service's decision log -> that schema |
| ``harness`` | estimator selection: error and interval coverage against a known truth (simulator, or a split of a log) |

With logged rewards ``r_i``, the logging propensity ``mu_i`` of the logged action ``a_i``
and the candidate policy's probability ``pi_i = pi(a_i | x_i)``, ``w_i = pi_i / mu_i``; see
:mod:`training.measurement.ope.estimators` for the formulas. ``ess_events`` = ESS x the
log's share of non-zero rewards is about how many rewarded rows (conversions) an
importance-weighted estimate rests on: below ``MIN_EFFECTIVE_EVENTS`` (30) a handful of
heavily weighted rows decide it and ``reliable`` is False.

The output's ``match`` is the share of rows where the candidate gives the logged action a
positive probability: with a deterministic candidate, only those rows carry weight.
"""

from __future__ import annotations

from training.measurement.ope.estimators import (
    ALL_METHODS,
    LEGACY_METHODS,
    MIN_EFFECTIVE_EVENTS,
    Estimate,
    LoggedData,
    direct_method,
    doubly_robust,
    dr_terms,
    effective_sample_size,
    estimate,
    evaluate,
    ips,
    paired_difference,
    reward_range_of,
    slope_select,
    snips,
)
from training.measurement.ope.frame import (
    LOG_CONTEXT,
    bandit_log_from_decisions,
    evaluate_frame,
    log_arrays,
    rows_reliable,
    withdrawn,
)
from training.measurement.ope.policies import (
    PolicyDist,
    UnsupportedPolicyError,
    catalogue_actions,
    policy_dist,
    policy_matrix,
)
from training.measurement.ope.reward import (
    RewardFit,
    RewardModel,
    action_features,
    context_matrix,
    cross_fit,
    cross_fit_rewards,
)

__all__ = [
    "ALL_METHODS",
    "LEGACY_METHODS",
    "LOG_CONTEXT",
    "MIN_EFFECTIVE_EVENTS",
    "Estimate",
    "LoggedData",
    "PolicyDist",
    "RewardFit",
    "RewardModel",
    "UnsupportedPolicyError",
    "action_features",
    "bandit_log_from_decisions",
    "catalogue_actions",
    "context_matrix",
    "cross_fit",
    "cross_fit_rewards",
    "direct_method",
    "doubly_robust",
    "dr_terms",
    "effective_sample_size",
    "estimate",
    "evaluate",
    "evaluate_frame",
    "ips",
    "log_arrays",
    "paired_difference",
    "policy_dist",
    "policy_matrix",
    "reward_range_of",
    "rows_reliable",
    "slope_select",
    "snips",
    "withdrawn",
]
