"""Models served from the MLflow registry by alias; moving ``champion`` swaps them live.

Uses the session's real MLflow store (tests/conftest.py: ``trained`` registered one version
per model and ``model_bundle`` made them champion). A second version of each model is
registered from the same logged artifacts, ``champion`` moves to it, and the service picks
it up on the admin call, then per model as the alias moves back, without a restart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from service.app import create_app
from tests.reliability.conftest import ADMIN, AUTH, settings_for

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


async def test_moving_the_champion_alias_swaps_models(
    trained: Any, model_bundle: Path, redis_url: str, redis_store: Any, tmp_path: Path
) -> None:
    import os

    from training.pipeline.registry import CHAMPION, REGISTERED_NAMES, client

    c = client()
    first = {k: c.get_model_version_by_alias(n, CHAMPION) for k, n in REGISTERED_NAMES.items()}
    second = {
        k: c.create_model_version(REGISTERED_NAMES[k], source=mv.source, run_id=mv.run_id)
        for k, mv in first.items()
    }
    uri = os.environ["MLFLOW_TRACKING_URI"]
    app = create_app(
        settings_for(
            redis_url, tmp_path / "no-bundle", tmp_path / "spool", MLFLOW_TRACKING_URI=uri,
            NEXTBEST_REDIS_TIMEOUT_MS=500,
        )
    )  # fmt: skip
    try:
        async with AsyncTestClient(app=app) as cl:

            async def serving() -> dict[str, str]:
                body = (await cl.get("/models")).json()["loaded"]
                assert body["source"] == f"mlflow:{CHAMPION}"
                return {k: v["version"] for k, v in body["models"].items()}

            assert await serving() == {k: str(v.version) for k, v in first.items()}
            for k, mv in second.items():
                c.set_registered_model_alias(REGISTERED_NAMES[k], CHAMPION, mv.version)
            r = await cl.post("/admin/models/reload", headers=ADMIN)
            assert r.json()["swapped"], r.text
            assert await serving() == {k: str(v.version) for k, v in second.items()}
            # roll one model back: the others stay where they are
            c.set_registered_model_alias(
                REGISTERED_NAMES["channel"], CHAMPION, first["channel"].version
            )
            await cl.post("/admin/models/reload", headers=ADMIN)
            now = await serving()
            assert now["channel"] == str(first["channel"].version)
            assert now["propensity"] == str(second["propensity"].version)
            d = await cl.post(
                "/decide",
                json={"anonymous_id": "ml-1", "context": {"placement": "home_banner"}},
                headers=AUTH,
            )
            assert d.status_code == 200
            assert d.json()["model_versions"]["nextbest-channel"] == str(first["channel"].version)
    finally:  # leave the session's registry as we found it
        for k, mv in first.items():
            c.set_registered_model_alias(REGISTERED_NAMES[k], CHAMPION, mv.version)
