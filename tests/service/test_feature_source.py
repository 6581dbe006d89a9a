"""NEXTBEST_FEATURE_SOURCE=feast: features through the Feast SDK (here the embedded SQLite
online store) decide exactly as the direct read of Feast's Redis layout does."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from litestar.testing import AsyncTestClient

from contracts.settings import Settings
from service.app import create_app
from tests.support import make_settings

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

KEY = "source-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


async def test_sdk_source_decides_like_the_redis_layout(
    redis_url: str,
    model_bundle: Path,
    small_world: Path,
    sqlite_store: Any,
    redis_store: Any,
    tmp_path: Path,
) -> None:
    env: dict[str, object] = {
        "NEXTBEST_REDIS_URL": redis_url, "NEXTBEST_MODELS_DIR": model_bundle,
        "NEXTBEST_API_KEYS": KEY, "NEXTBEST_SPOOL_DIR": tmp_path, "NEXTBEST_MODEL_POLL_S": 0,
        "NEXTBEST_SCHEDULER_POLL_S": 0, "NEXTBEST_REDIS_TIMEOUT_MS": 1000,
        # the SDK reads the repository the offline tools applied (this session's var dir)
        "NEXTBEST_VAR_DIR": os.environ["NEXTBEST_VAR_DIR"],
    }  # fmt: skip
    base = make_settings(**env)
    sdk = make_settings(**env, NEXTBEST_FEATURE_SOURCE="feast", NEXTBEST_FEATURE_TIMEOUT_MS=5000)
    truth = pd.read_parquet(small_world / "truth" / "truth_customers.parquet")
    people = truth.loc[~truth["anonymous"] & ~truth["opted_out"], "customer_id"].iloc[:12]
    answers: dict[str, list[dict[str, Any]]] = {}
    for name, settings in (("redis", base), ("feast", sdk)):
        async with AsyncTestClient(app=create_app(settings)) as c:
            out = []
            for cid in [*people, "C_NOT_A_CUSTOMER"]:
                # the model arm: the explore arm draws from the (random) decision id
                body = {"customer_id": cid, "context": {"placement": "home_banner"},
                        "experiment": {"name": "nba", "arm": "model"},
                        "now": "2026-11-16T09:00:00Z", "explain": True}  # fmt: skip
                r = await c.post("/decide", json=body, headers=AUTH)
                assert r.status_code == 200, r.text
                out.append(r.json())
            answers[name] = out
    for via_redis, via_sdk in zip(answers["redis"], answers["feast"], strict=True):
        assert via_sdk["degraded"] == [] and via_redis["degraded"] == []
        assert via_sdk["cold_start"] == via_redis["cold_start"]
        assert via_sdk["explain"]["channel_scores"] == pytest.approx(
            via_redis["explain"]["channel_scores"], rel=1e-6
        )
        assert via_sdk["explain"]["hour_scores"] == pytest.approx(
            via_redis["explain"]["hour_scores"], rel=1e-6
        )
        a, b = via_sdk["action"], via_redis["action"]
        assert (a and (a["offer_id"], a["channel"])) == (b and (b["offer_id"], b["channel"]))
        if a:
            assert a["probability"] == pytest.approx(b["probability"], rel=1e-6)
        if via_redis["feature_age_seconds"] is not None:
            assert via_sdk["feature_age_seconds"] == pytest.approx(
                via_redis["feature_age_seconds"], abs=1.0
            )
    assert sum(not a["cold_start"] for a in answers["feast"]) == 12
    assert answers["feast"][-1]["cold_start"]  # unknown customer: cold start, not an error


def test_an_unknown_feature_source_stops_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXTBEST_FEATURE_SOURCE", "dynamo")
    with pytest.raises(ValueError, match="NEXTBEST_FEATURE_SOURCE"):
        Settings.from_env()
