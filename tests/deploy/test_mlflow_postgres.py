"""MLflow on PostgreSQL: the training pipeline and the service against a real tracking server.

`mlflow server` runs with the command of compose.yaml's ``mlflow`` service (only the database,
the artifacts folder, host, port and worker count are substituted) on a fresh database of the
test machine's PostgreSQL server, serving artifacts from its own folder. The real ``train``
stage logs and registers the three models there, ``promote`` and ``export-bundle`` read them
back, and a service process of the ``serve`` image (MLflow's client only: mlflow-skinny) with
``MLFLOW_TRACKING_URI`` and *no* bundle loads the champions through the server and passes the
decision suite. Moving the alias rolls a model forward
(picked up by the poll) and back (``POST /admin/models/reload``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from service.adapters.redis_store import sync_client
from tests.deploy.conftest import (
    ADMIN_KEY,
    ROOT,
    base_env,
    service_env,
    service_process,
    world_people,
)
from tests.deploy.decision_suite import CHECKS, Check, Deployment
from tests.deploy.dockerfile import Emulator
from tests.deploy.processes import Child, free_port, wait_http

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.anyio]

MLFLOW_START_TIMEOUT_S = 300.0


def compose_mlflow(database: str, artifacts: Path, port: int) -> tuple[list[str], dict[str, str]]:
    """compose.yaml's `mlflow` command and environment, for this machine."""
    spec = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["mlflow"]
    cmd = [str(x) for x in spec["command"]]
    assert cmd[:2] == ["mlflow", "server"], cmd
    flags = cmd[2:]
    subst = {
        "--backend-store-uri": database,
        "--artifacts-destination": str(artifacts),
        "--host": "127.0.0.1",
        "--port": str(port),
        "--workers": "1",
    }
    out = [str(Path(sys.executable).parent / "mlflow"), "server"]
    i = 0
    while i < len(flags):
        flag = flags[i]
        if flag in ("--serve-artifacts",):
            out.append(flag)
            i += 1
            continue
        value = flags[i + 1]
        assert flag in (*subst, "--allowed-hosts"), f"compose.yaml: unexpected mlflow flag {flag}"
        if flag == "--backend-store-uri":
            assert value.startswith("postgresql://"), value
        out += [flag, subst.get(flag, value)]
        i += 2
    assert "--serve-artifacts" in out
    env = {**base_env(), **{k: str(v) for k, v in spec.get("environment", {}).items()}}
    return out, env


@pytest.fixture(scope="module")
def mlflow_server(postgres_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    cmd, env = compose_mlflow(postgres_db, tmp / "artifacts", port)
    with Child(cmd, tmp / "mlflow.log", env=env, cwd=tmp) as child:
        url = f"http://127.0.0.1:{port}"
        wait_http(child, f"{url}/health", MLFLOW_START_TIMEOUT_S)
        yield {"url": url, "artifacts": tmp / "artifacts", "database": postgres_db}


@pytest.fixture(scope="module")
def registry(mlflow_server: dict[str, Any], sqlite_store: Any, var_dir: Path) -> dict[str, Any]:
    """`train` -> `promote` -> champion -> `export-bundle`, all against the tracking server."""
    import os

    import mlflow

    from training.pipeline.bundle import export_bundle
    from training.pipeline.registry import (
        CANDIDATE,
        CHAMPION,
        REGISTERED_NAMES,
        client,
        promote,
        version_by_alias,
    )
    from training.pipeline.train import train

    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MLFLOW_TRACKING_URI", mlflow_server["url"])
            result = train(max_rows=1500, progress=False)
            _, refusals = promote()  # the gates, read back from the server
            c = client()  # keeps the server's URI
            for kind, name in REGISTERED_NAMES.items():  # a 3,000-customer world is too small
                if version_by_alias(c, kind, CHAMPION) is None:  # to pass every gate
                    c.set_registered_model_alias(name, CHAMPION, result.versions[kind])
                assert version_by_alias(c, kind, CANDIDATE).version == result.versions[kind]
            bundle = var_dir / "bundle-from-postgres"
            manifest = export_bundle(bundle)
            # a second version of the propensity model, to roll forward and back to
            name = REGISTERED_NAMES["propensity"]
            v2 = c.copy_model_version(f"models:/{name}/{result.versions['propensity']}", name)
    finally:  # mlflow keeps a process-wide URI: back to the session's
        if os.environ.get("MLFLOW_TRACKING_URI"):
            mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    return {
        "result": result,
        "refusals": refusals,
        "bundle": bundle,
        "manifest": manifest,
        "client": c,
        "v1": result.versions["propensity"],
        "v2": str(v2.version),
    }


def test_runs_models_and_aliases_live_in_postgres(
    mlflow_server: dict[str, Any], registry: dict[str, Any]
) -> None:
    import psycopg

    with psycopg.connect(mlflow_server["database"]) as db:
        names = {r[0] for r in db.execute("SELECT name FROM registered_models")}
        aliases = {
            r[0]: r[1] for r in db.execute("SELECT name, alias FROM registered_model_aliases")
        }
        exp = db.execute(
            "SELECT artifact_location FROM experiments WHERE name = 'nextbest'"
        ).fetchone()
        runs = db.execute("SELECT count(*) FROM runs").fetchone()
    assert names == {"nextbest-propensity", "nextbest-send-time", "nextbest-channel"}
    assert set(aliases) == names
    assert runs is not None and runs[0] >= 1
    # artifacts go through the server into its artifact root, not onto the trainer's disk
    assert exp is not None and exp[0].startswith("mlflow-artifacts:"), exp
    assert len(list(mlflow_server["artifacts"].rglob("*.onnx"))) == 3  # the three models


def test_export_bundle_downloads_from_the_server(registry: dict[str, Any]) -> None:
    from service.adapters.models import load_bundle

    models = load_bundle(registry["bundle"])
    assert models.versions == {
        m["registered_name"]: str(m["version"]) for m in registry["manifest"]["models"].values()
    }


@pytest.fixture(scope="module")
def deployment(
    mlflow_server: dict[str, Any],
    registry: dict[str, Any],
    redis_url: str,
    redis_store: Any,
    small_world: Path,
    serve_image: Emulator,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("mlflow-service")
    python = serve_image.rootfs / "opt" / "venv" / "bin" / "python"
    env = service_env(
        redis_url,
        tmp / "spool",
        MLFLOW_TRACKING_URI=mlflow_server["url"],
        NEXTBEST_MODELS_DIR=str(tmp / "no-bundle-here"),
        NEXTBEST_MODEL_POLL_S="1",
        NEXTBEST_WORKERS="1",
    )
    r = sync_client(redis_url)
    with service_process(env, tmp / "service.log", python=str(python), cwd=tmp) as (_, base):
        yield Deployment("mlflow-postgres", [base], r, world_people(small_world, 400))
    r.close()


def test_service_serves_the_registry_champions(
    deployment: Deployment, registry: dict[str, Any]
) -> None:
    loaded = httpx.get(f"{deployment.bases[0]}/models", timeout=10).json()["loaded"]
    assert loaded["source"] == "mlflow:champion"
    assert loaded["models"]["propensity"]["version"] == registry["v1"]


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
async def test_decision_suite(check: Check, deployment: Deployment) -> None:
    await check(deployment)


def test_alias_rolls_a_model_forward_and_back(
    deployment: Deployment, registry: dict[str, Any]
) -> None:
    c, name = registry["client"], "nextbest-propensity"
    base = deployment.bases[0]

    def serving() -> str:
        loaded = httpx.get(f"{base}/models", timeout=10).json()["loaded"]
        return str(loaded["models"]["propensity"]["version"])

    c.set_registered_model_alias(name, "champion", registry["v2"])  # forward: the poll sees it
    deadline = time.monotonic() + 60
    while serving() != registry["v2"] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert serving() == registry["v2"]
    c.set_registered_model_alias(name, "champion", registry["v1"])  # back: reload at once
    resp = httpx.post(
        f"{base}/admin/models/reload", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60
    )
    assert resp.status_code == 200 and resp.json()["swapped"], resp.text
    assert serving() == registry["v1"]
