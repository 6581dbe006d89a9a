"""Off-policy evaluation: the value of a candidate policy from logs of another one.

Pure numpy functions. With logged rewards ``r_i``, the logging propensity ``mu_i`` of the
logged action ``a_i`` and the candidate policy's probability ``pi_i = pi(a_i | x_i)``,
``w_i = pi_i / mu_i``:

* **IPS**: ``mean(w_i r_i)``; unbiased when ``mu > 0`` wherever ``pi > 0``.
* **SNIPS** (self-normalised): ``sum(w_i r_i) / sum(w_i)``; slightly biased, much lower variance.
* **DM** (direct method): ``mean(sum_a pi(a|x_i) q(x_i, a))`` from a reward model ``q``.
* **DR** (doubly robust): ``DM + mean(w_i (r_i - q(x_i, a_i)))``; unbiased if either the
  propensities or the reward model are right. The reward model is cross-fitted (each row is
  predicted by a model that did not see it).

Intervals: CLT on the per-row terms (``value +- z sd/sqrt(n)``; for SNIPS the linearised
terms ``w_i (r_i - V) / mean(w)``), or a percentile bootstrap (``n_boot > 0``). The effective
sample size ``(sum w)^2 / sum w^2`` says how many logged rows the estimate is really worth;
``ess_events`` = ESS x the log's share of non-zero rewards is about how many rewarded rows
(conversions) it rests on: below ``MIN_EFFECTIVE_EVENTS`` (30) a handful of heavily weighted
rows, which may or may not have converted, decide the estimate, the CLT interval cannot be
trusted and ``reliable`` is False.

Log schema for :func:`evaluate_frame` and ``python -m training ope`` (Parquet or CSV):

| column | meaning |
|---|---|
| ``action`` | the logged action (any string) |
| ``propensity`` | probability with which the logging policy chose that action, in (0, 1] |
| ``reward`` | observed reward (conversion 0/1, revenue, ...) |
| ``x_*`` | context features (numeric; categorical strings are integer-coded) |

Candidate policies (``--policy``): ``constant:<action>``, ``uniform`` (over the actions seen
in the log), ``column:<col>`` (the candidate's action per row is in column ``col``; it may
name actions the log never took, which then earn no weight), ``probs:<prefix>`` (columns
``<prefix><action>`` hold pi(action | x)). The output's ``match`` is the share of rows where
the candidate gives the logged action a positive probability: with a deterministic
candidate, only those rows carry weight.
"""

from __future__ import annotations

from training.measurement.ope.estimators import (
    MIN_EFFECTIVE_EVENTS,
    Estimate,
    direct_method,
    doubly_robust,
    dr_terms,
    effective_sample_size,
    evaluate,
    ips,
    paired_difference,
    snips,
)
from training.measurement.ope.frame import (
    LOG_CONTEXT,
    bandit_log_from_decisions,
    evaluate_frame,
    rows_reliable,
    withdrawn,
)
from training.measurement.ope.policies import policy_matrix
from training.measurement.ope.reward import RewardModel, context_matrix, cross_fit_rewards

__all__ = [
    "LOG_CONTEXT",
    "MIN_EFFECTIVE_EVENTS",
    "Estimate",
    "RewardModel",
    "bandit_log_from_decisions",
    "context_matrix",
    "cross_fit_rewards",
    "direct_method",
    "doubly_robust",
    "dr_terms",
    "effective_sample_size",
    "evaluate",
    "evaluate_frame",
    "ips",
    "paired_difference",
    "policy_matrix",
    "rows_reliable",
    "snips",
    "withdrawn",
]
