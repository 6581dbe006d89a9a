"""Model hot swap under concurrent load: validated off the request path, swapped atomically,
a broken set refused while the old one keeps serving."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from loadtests.faults import stage_bundle
from service.app import create_app
from tests.reliability.conftest import ADMIN, AUTH, settings_for

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

NOW = "2026-11-16T09:00:00Z"


async def hammer(
    c: AsyncTestClient[Any], stop: asyncio.Event, seen: list[tuple[int, dict[str, str]]]
) -> None:
    i = 0
    while not stop.is_set():
        i += 1
        r = await c.post(
            "/decide",
            json={"anonymous_id": f"swap-{i}", "context": {"placement": "home_banner"}, "now": NOW},
            headers=AUTH,
        )
        seen.append((r.status_code, r.json().get("model_versions", {})))
        await asyncio.sleep(0)


async def serving(c: AsyncTestClient[Any]) -> dict[str, Any]:
    body: dict[str, Any] = (await c.get("/models")).json()
    return body


def versions(manifest_dir: Path) -> dict[str, str]:
    m = json.loads((manifest_dir / "manifest.json").read_text())
    return {v["registered_name"]: str(v["version"]) for v in m["models"].values()}


async def test_swap_under_load_then_refuse_broken_sets(
    model_bundle: Path, redis_url: str, redis_store: Any, tmp_path: Path
) -> None:
    served = tmp_path / "models"
    stage_bundle(model_bundle, served)
    old = versions(served)
    app = create_app(
        settings_for(redis_url, served, tmp_path / "spool", NEXTBEST_REDIS_TIMEOUT_MS=500)
    )
    async with AsyncTestClient(app=app) as c:
        seen: list[tuple[int, dict[str, str]]] = []
        stop = asyncio.Event()
        workers = [asyncio.create_task(hammer(c, stop, seen)) for _ in range(6)]
        await asyncio.sleep(0.3)
        stage_bundle(model_bundle, served, tag="v2")
        new = versions(served)
        r = await c.post("/admin/models/reload", headers=ADMIN)
        assert r.status_code == 200 and r.json()["swapped"], r.text
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*workers)
        assert len(seen) > 20 and all(code == 200 for code, _ in seen)
        # every answer came from one whole model set: the old one, then the new one
        assert {tuple(sorted(v.items())) for _, v in seen} == {
            tuple(sorted(old.items())),
            tuple(sorted(new.items())),
        }
        first_new = next(i for i, (_, v) in enumerate(seen) if v == new)
        assert all(v == new for _, v in seen[first_new:])

        # --- broken sets are refused, the current one keeps serving
        def corrupt_model(d: Path) -> None:
            f = d / "channel.onnx"
            f.write_bytes(f.read_bytes()[:-100])  # checksum no longer matches

        def reorder_features(d: Path) -> None:
            m = json.loads((d / "manifest.json").read_text())
            m["models"]["channel"]["features"] = m["models"]["channel"]["features"][::-1]
            (d / "manifest.json").write_text(json.dumps(m))

        def wrong_expected_output(d: Path) -> None:
            m = json.loads((d / "manifest.json").read_text())
            out = m["models"]["propensity"]["expected_output"]
            m["models"]["propensity"]["expected_output"] = [min(v + 0.1, 1.0) for v in out]
            (d / "manifest.json").write_text(json.dumps(m))

        for breaker, why in (
            (corrupt_model, "sha256"),
            (reorder_features, "feature order"),
            (wrong_expected_output, "parity"),
        ):
            stage_bundle(model_bundle, served, tag="broken")
            breaker(served)
            r = await c.post("/admin/models/reload", headers=ADMIN)
            body = r.json()
            assert r.status_code == 200 and not body["swapped"], body
            assert why in body["error"], body["error"]
            info = await serving(c)
            assert why in info["last_error"]
            assert {
                v["registered_name"]: v["version"] for v in info["loaded"]["models"].values()
            } == new
            d = await c.post(
                "/decide",
                json={"anonymous_id": "after", "context": {"placement": "home_banner"}, "now": NOW},
                headers=AUTH,
            )
            assert d.status_code == 200 and d.json()["model_versions"] == new


async def test_polling_picks_up_a_new_bundle_by_itself(
    model_bundle: Path, redis_url: str, redis_store: Any, tmp_path: Path
) -> None:
    served = tmp_path / "models"
    stage_bundle(model_bundle, served)
    app = create_app(
        settings_for(
            redis_url,
            served,
            tmp_path / "spool",
            NEXTBEST_MODEL_POLL_S=0.2,
            NEXTBEST_REDIS_TIMEOUT_MS=500,
        )
    )
    async with AsyncTestClient(app=app) as c:
        stage_bundle(model_bundle, served, tag="polled")
        want = versions(served)
        for _ in range(100):
            loaded = (await serving(c))["loaded"]["models"]
            if {v["registered_name"]: v["version"] for v in loaded.values()} == want:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the new bundle was not picked up")
