"""Kill and restart a real Redis in the middle of traffic, swap the models, then count.

The same run as ``python -m loadtests.faults`` (shorter): the production server against a
redis-server we own, known customers with real features, SIGKILL at 30 %, restart at 50 %,
a model swap at 70 %. Every acknowledged decision and feedback must be in the log exactly
once, no request may fail with a 5xx, and the service must recover without a restart.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests.faults import run

pytestmark = [pytest.mark.slow]


def test_kill_restart_and_swap_lose_nothing(model_bundle: Path, small_world: Path) -> None:
    s = run(seconds=12, concurrency=8, models_dir=model_bundle, data_dir=small_world, known=500)
    assert s["requests"] > 200 and s["known_customer_decisions"] > 50
    assert s["5xx"] == 0, s["status"]
    assert s["decisions_lost"] == 0 and s["decisions_duplicated"] == 0
    assert s["feedback_lost"] == 0 and s["feedback_duplicated"] == 0
    assert s["acked_decisions"] == s["decisions_found_once"] > 0
    assert s["acked_feedback"] == s["feedback_found_once"] > 0
    assert s["degraded_share"] > 0  # the fault was real: some answers were fallbacks
    assert s["recovery_s_after_redis_back"] is not None
    swap = s["model_swap"]
    assert swap["swapped"] and swap["serving_after"] == swap["staged"]
    assert all(v.endswith("+swap") for v in swap["serving_after"].values())
    assert s["5xx_within_1s_of_swap"] == 0
