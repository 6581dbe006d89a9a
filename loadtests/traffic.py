"""The realistic traffic mix shared by Locust, the benchmark and the fault-injection script.

Known customers drawn from the generated world with a Zipf-like skew (a few customers are
very active), some anonymous visitors, some opted-out customers (they are in the world),
repeat push requests that run into frequency caps, 10 candidate offers per request, and a
share of requests that name an experiment.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TrafficMix", "load_mix"]

PLACEMENTS = (
    ("home_banner", 0.45),
    ("app_screen", 0.2),
    ("campaign", 0.2),
    ("push_batch", 0.1),
    ("email", 0.05),
)
NOW = "2026-11-16T09:00:00Z"


@dataclass
class TrafficMix:
    customers: list[str]
    offers: list[str]
    weights: np.ndarray
    rng: random.Random
    anonymous_share: float = 0.08
    experiment_share: float = 0.2
    feedback_ratio: float = 0.2  # feedback calls per decision

    def decide_body(self) -> dict[str, Any]:
        r = self.rng
        placement = r.choices([p for p, _ in PLACEMENTS], [w for _, w in PLACEMENTS])[0]
        body: dict[str, Any] = {
            "context": {"placement": placement},
            "candidates": r.sample(self.offers, min(10, len(self.offers))),
            "now": NOW,
        }
        if r.random() < self.anonymous_share:
            body["anonymous_id"] = f"anon-{r.randrange(1_000_000)}"
        else:
            i = int(np.searchsorted(self.weights, r.random()))
            body["customer_id"] = self.customers[min(i, len(self.customers) - 1)]
        if r.random() < self.experiment_share:
            body["experiment"] = {"name": "send_time"}
        return body

    def feedback_body(self, decision_id: str) -> dict[str, Any]:
        event = self.rng.choices(
            ["delivered", "opened", "clicked", "converted"], [0.6, 0.25, 0.1, 0.05]
        )[0]
        return {
            "decision_id": decision_id,
            "event": event,
            "value": 10.0 if event == "converted" else None,
        }


def load_mix(data_dir: Path | None = None, seed: int = 1, limit: int = 50_000) -> TrafficMix:
    import pandas as pd

    from contracts.tables import layout

    data = data_dir or Path(
        os.environ.get(
            "NEXTBEST_DATA_DIR", Path(__file__).resolve().parent.parent / "var" / "world"
        )
    )
    where = layout(data)
    ids = pd.read_parquet(where.feature_table("customer_profile"), columns=["customer_id"])[
        "customer_id"
    ]
    customers = ids.sample(min(limit, len(ids)), random_state=seed).tolist()
    offers_df = pd.read_parquet(where.raw_table("offers"))
    offers = offers_df["offer_id"].iloc[:18].tolist()  # the valid ones
    ranks = np.arange(1, len(customers) + 1, dtype=np.float64)
    w = 1.0 / ranks**0.8
    return TrafficMix(customers, offers, np.cumsum(w) / w.sum(), random.Random(seed))
