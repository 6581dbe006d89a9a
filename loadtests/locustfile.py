"""Locust: the realistic /decide + /feedback mix against a running service.

    NEXTBEST_API_KEY=... locust -f loadtests/locustfile.py --headless -u 20 -r 20 -t 60s \
        --host http://127.0.0.1:8000          (or: make loadtest)

The mix is loadtests/traffic.py: known customers from the world with a Zipf-like skew (the
busiest ones run into their frequency caps), ~8% anonymous visitors, the world's ~3%
opted-out customers, 10 candidate offers per request, 20% naming an experiment; and
``feedback_ratio`` (0.2) outcome reports per decision, each for a decision this user received.

By default each user waits 0-20 ms between requests (closed loop, find the maximum); set
NEXTBEST_LOCUST_RPS_PER_USER to offer a fixed rate per user instead (``constant_throughput``).
Prints p50/p95/p99 and throughput at the end, plus one ``LOCUST_JSON {...}`` line.
"""

from __future__ import annotations

import json
import os
import sys
from collections import deque
from pathlib import Path
from typing import Any

from locust import FastHttpUser, between, constant_throughput, events, task

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from loadtests.traffic import load_mix

MIX = load_mix()
HEADERS = {"Authorization": f"Bearer {os.environ.get('NEXTBEST_API_KEY', '')}"}
_RPS = float(os.environ.get("NEXTBEST_LOCUST_RPS_PER_USER", "0") or 0)


class DecisionClient(FastHttpUser):
    wait_time = constant_throughput(_RPS) if _RPS > 0 else between(0.0, 0.02)

    def on_start(self) -> None:
        self.pending: deque[str] = deque(maxlen=50)

    @task
    def next_request(self) -> None:
        # feedback_ratio reports per decision: a report whenever one is owed
        owed = self.pending and MIX.rng.random() < MIX.feedback_ratio / (1 + MIX.feedback_ratio)
        if owed:
            self.feedback(self.pending.popleft())
        else:
            self.decide()

    def decide(self) -> None:
        with self.client.post(
            "/decide", json=MIX.decide_body(), headers=HEADERS, catch_response=True
        ) as r:
            if r.status_code != 200:
                r.failure(f"status {r.status_code}")
                return
            body = r.json()
            if body.get("action") is not None:  # only acted-on decisions get outcomes
                self.pending.append(body["decision_id"])

    def feedback(self, decision_id: str) -> None:
        with self.client.post(
            "/feedback",
            json=MIX.feedback_body(decision_id),
            headers=HEADERS,
            catch_response=True,
        ) as r:
            if r.status_code != 200:
                r.failure(f"status {r.status_code}")


@events.quitting.add_listener
def _summary(environment: Any, **_: Any) -> None:
    stats = environment.stats
    s = stats.total
    if not s.num_requests:
        return
    elapsed = max(s.last_request_timestamp - s.start_time, 1e-9)
    out = {
        "requests": s.num_requests,
        "failures": s.num_failures,
        "rps": s.num_requests / elapsed,
        "duration_s": round(elapsed, 1),
        "p50": s.get_response_time_percentile(0.5),
        "p95": s.get_response_time_percentile(0.95),
        "p99": s.get_response_time_percentile(0.99),
    }
    for name in ("/decide", "/feedback"):
        e = stats.entries.get((name, "POST"))
        if e is not None and e.num_requests:
            key = name.strip("/")
            out[f"{key}_requests"] = e.num_requests
            out[f"{key}_p99"] = e.get_response_time_percentile(0.99)
    print(
        f"\nSUMMARY requests={out['requests']} failures={out['failures']} rps={out['rps']:.0f} "
        f"p50={out['p50']:.1f}ms p95={out['p95']:.1f}ms p99={out['p99']:.1f}ms"
    )
    print("LOCUST_JSON " + json.dumps(out))
