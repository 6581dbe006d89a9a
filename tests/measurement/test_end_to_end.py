"""The measurement loop on the real service: explore-arm decisions over HTTP (real Redis, real
exported models) -> feedback -> export-log -> the OPE log -> offline replay of a candidate.

The replay rebuilds each decision from the log and the Feast offline store and calls the
service's own pure decision function; for the decisions where the explore arm took its
greedy action, replaying the greedy model policy must give back exactly that action.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from litestar.testing import AsyncTestClient

from contracts.settings import Settings
from service.app import create_app
from service.domain.config import load_policy
from tests.support import make_settings
from training.cli import main
from training.measurement import decision_log, ope, replay

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

API_KEY = "measure-e2e-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
NOW = "2026-11-18T09:00:00Z"  # a day no other test decides on


@pytest.fixture(scope="module")
def settings(
    redis_url: str, model_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    return make_settings(
        NEXTBEST_REDIS_URL=redis_url,
        NEXTBEST_MODELS_DIR=model_bundle,
        NEXTBEST_API_KEYS=API_KEY,
        NEXTBEST_SPOOL_DIR=tmp_path_factory.mktemp("spool"),
        NEXTBEST_MODEL_POLL_S=0,
        NEXTBEST_REDIS_TIMEOUT_MS=1000,
        NEXTBEST_SCHEDULER_POLL_S=0,
    )


@pytest.fixture
async def client(settings: Settings, redis_store: Any) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(app=create_app(settings)) as c:
        yield c


async def test_explore_log_to_ope_and_replay(
    client: AsyncTestClient[Any],
    small_world: Path,
    model_bundle: Path,
    redis_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    truth = pd.read_parquet(small_world / "truth" / "truth_customers.parquet")
    people = truth.loc[~truth["anonymous"] & ~truth["opted_out"], "customer_id"].iloc[-120:]
    eps = next(
        a.epsilon for a in load_policy().experiments.definitions["nba"].arms if a.name == "explore"
    )
    ids = []
    for i, cid in enumerate(people):
        body = {"customer_id": cid, "context": {"placement": "campaign"}, "now": NOW,
                "experiment": {"name": "nba", "arm": "explore"}}  # fmt: skip
        resp = await client.post("/decide", json=body, headers=AUTH)
        assert resp.status_code == 200, resp.text
        d = resp.json()
        assert d["arm"] == "explore" and d["policy"] == "explore"
        assert 0 < d["choice_probability"] <= 1
        ids.append(d["decision_id"])
        if d["action"] is not None and i % 4 == 0:
            fb = {"decision_id": d["decision_id"], "event": "converted", "value": 20.0}
            assert (await client.post("/feedback", json=fb, headers=AUTH)).status_code == 200

    out = tmp_path / "log"
    decision_log.export_log(redis_url, out)
    decisions, feedback = decision_log.load_log(out)
    mine = decisions[decisions["decision_id"].isin(ids)]
    assert len(mine) == len(ids)
    # the complete record: versions per model kind, how the arm was chosen, every candidate
    assert mine["model_version_propensity"].notna().all()
    assert (mine["allocation"] == "caller").all()  # the requests named the arm
    acted = mine[mine["action_offer"].notna()]
    assert acted["candidates"].notna().all() and acted["explore_epsilon"].notna().all()
    assert (acted["explore_cost"] >= 0).all()
    log = ope.bandit_log_from_decisions(decision_log.outcomes(mine, feedback))
    assert len(log) > 100 and (log["propensity"] > 0).all()
    greedy = log["propensity"] > 1 - eps  # the explore arm took its greedy action
    assert 0.5 < greedy.mean() < 1.0  # and explored on some rows (P ~ eps)
    assert (log.loc[~greedy, "propensity"] <= eps).all()
    assert log.loc[log["action"] != "none", "reward"].sum() > 0

    feats = replay.logged_features(log)
    # point-in-time features found for the units (some features are legitimately missing)
    assert feats[["tz_offset", "views_total", "sent_email"]].notna().all(axis=1).mean() > 0.9
    cand = replay.candidate_actions(log, feats, replay.parse_candidate("model", model_bundle))
    same = cand["action"].to_numpy() == log["action"].to_numpy()
    assert same[greedy.to_numpy()].all(), log.loc[greedy & ~same, ["unit", "action"]]
    hours = cand.loc[greedy.to_numpy(), "local_hour"].to_numpy()
    assert np.array_equal(hours, log.loc[greedy, "logged_local_hour"].to_numpy())

    # the CLI on the same export (other tests' decisions in the database are explore-free or
    # few): the model candidate's estimate and the schema written for other tools
    ope_path = tmp_path / "ope.parquet"
    rc = main(["ope", "--log", str(out), "--candidate", f"model,models={model_bundle}",
               "--out", str(ope_path)])  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert "column:cand_model" in text and "DR" in text
    written = pd.read_parquet(ope_path)
    assert {"action", "propensity", "reward", "cand_model"} <= set(written.columns)
    assert any(c.startswith("x_") for c in written.columns)
