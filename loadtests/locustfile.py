"""Locust: the realistic /decide + /feedback mix against a running service.

    NEXTBEST_API_KEY=... locust -f loadtests/locustfile.py --headless -u 50 -r 10 -t 60s \
        --host http://127.0.0.1:8000

Prints p50/p95/p99 and throughput at the end (also Locust's own tables).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from locust import FastHttpUser, between, events, task

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from loadtests.traffic import load_mix

MIX = load_mix()
HEADERS = {"Authorization": f"Bearer {os.environ.get('NEXTBEST_API_KEY', '')}"}


class DecisionClient(FastHttpUser):
    wait_time = between(0.0, 0.02)

    @task(10)
    def decide(self) -> None:
        with self.client.post(
            "/decide", json=MIX.decide_body(), headers=HEADERS, catch_response=True
        ) as r:
            if r.status_code != 200:
                r.failure(f"status {r.status_code}")
                return
            if MIX.rng.random() < MIX.feedback_ratio * 5:  # feedback tasks get the id from here
                self.pending = r.json()["decision_id"]

    @task(2)
    def feedback(self) -> None:
        decision_id = getattr(self, "pending", None)
        if not decision_id:
            return
        self.client.post("/feedback", json=MIX.feedback_body(decision_id), headers=HEADERS)


@events.quitting.add_listener
def _summary(environment: Any, **_: Any) -> None:
    s = environment.stats.total
    if not s.num_requests:
        return
    print(
        f"\nSUMMARY requests={s.num_requests} failures={s.num_failures} "
        f"rps={s.total_rps:.0f} p50={s.get_response_time_percentile(0.5):.1f}ms "
        f"p95={s.get_response_time_percentile(0.95):.1f}ms p99={s.get_response_time_percentile(0.99):.1f}ms"
    )
