"""The container image and compose.yaml, kept honest without a Docker engine.

No Docker engine runs on the development machines, so the image is checked by what it runs:

* hadolint lints the Dockerfile (every finding fails, .hadolint.yaml);
* the Dockerfile's own build steps (COPY from the context, WORKDIR, ENV, every RUN) are
  replayed into a fresh folder standing for the image's root, creating a fresh virtual
  environment exactly as the image does (uv from its cache: ``UV_OFFLINE=1`` is the one
  addition); only the root-only commands (OS packages, the service user) are skipped, and the
  test names them;
* the image's CMD starts the service with the image's ENV plus NEXTBEST_WORKERS=2 (as
  ``docker run -e``: the multi-worker start), a model bundle in ``models/`` as if mounted, on a
  loopback port; ``/ready``
  answers, the HEALTHCHECK command exits 0, a decision is made, SIGTERM stops it cleanly;
* compose.yaml's commands are checked against the real CLIs and settings.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
import yaml

from tests.deploy.conftest import API_KEY, READY_TIMEOUT_S, ROOT
from tests.deploy.dockerfile import SYSTEM_COMMANDS, Emulator, Stage, parse
from tests.deploy.processes import Child, free_port, wait_http

pytestmark = [pytest.mark.slow]  # the service start needs Redis (redis_url)

DOCKERFILE = ROOT / "Dockerfile"


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(DOCKERFILE.read_text())


def _tool(name: str) -> str:
    found = shutil.which(name, path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    if not found:
        pytest.fail(f"`{name}` not found: run `make setup` (the dev extra installs it)")
    return found


def test_hadolint_passes() -> None:
    proc = subprocess.run(
        [_tool("hadolint"), "--config", str(ROOT / ".hadolint.yaml"), str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_image_contract(stages: list[Stage]) -> None:
    """Multi-stage, slim 3.11 bases, only the venv and the app copied, non-root, checks /health."""
    assert len(stages) == 2 and stages[0].name == "build"
    for s in stages:
        assert re.fullmatch(r"python:3\.11-slim(-\w+)?", s.image), s.image
    final = stages[-1]
    copies = [st for st in final.steps if st.op == "COPY"]
    assert all(st.flags.get("from") == "build" for st in copies), "context COPY in the final stage"
    assert {st.args.split()[0] for st in copies} == {"/opt/venv", "/app"}
    user = final.last("USER")
    assert user is not None and user.args.split(":")[0] not in ("root", "0")
    health = final.last("HEALTHCHECK")
    assert health is not None and "/health" in health.args
    cmd = final.last("CMD")
    assert cmd is not None and cmd.exec_form() == ["python", "-m", "service"]
    runs = " && ".join(st.args for st in final.steps if st.op == "RUN")
    installs = re.findall(r"apt-get install [^&]*", runs)
    packages = {p.split("=")[0] for i in installs for p in i.split()[2:] if not p.startswith("-")}
    assert packages == {"libgomp1"}, packages  # no compiler or build tool at run time


@pytest.fixture(scope="module")
def image_root(stages: list[Stage], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """The image built by replaying the Dockerfile into a fresh folder (removed afterwards:
    about 1 GB, and pytest keeps the last three runs' temporary folders)."""
    rootfs = tmp_path_factory.mktemp("image-root")
    python = getattr(sys, "_base_executable", sys.executable)
    emu = Emulator(ROOT, rootfs, uv=_tool("uv"), python=python)
    extra = {"UV_OFFLINE": "1"}  # no network in tests: uv installs from its cache
    for k in ("HOME", "UV_CACHE_DIR", "XDG_CACHE_HOME", "TMPDIR"):
        if k in os.environ:
            extra[k] = os.environ[k]
    try:
        for stage in stages:
            emu.run_stage(stage, extra)
        yield emu
    finally:
        shutil.rmtree(rootfs / "opt", ignore_errors=True)


def test_build_steps_ran_in_a_fresh_environment(image_root: Emulator) -> None:
    venv = image_root.rootfs / "opt" / "venv"
    assert (venv / "pyvenv.cfg").exists()
    assert any("uv pip install" in c for c in image_root.ran)
    # everything not run needs root inside an image, and is listed as such
    assert image_root.skipped and all(c.startswith(SYSTEM_COMMANDS) for c in image_root.skipped)
    # the install is the project in /app, with the PostgreSQL driver for the MLflow server
    probe = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import service, training, psycopg, mlflow; print(service.__file__)",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
        cwd=image_root.rootfs,  # not /app: the installed project must point there by itself
    )
    assert probe.stdout.strip() == str(image_root.rootfs / "app" / "service" / "__init__.py")
    # no extra beyond `postgres`: no test, lint or load tools in the image (mypy does come:
    # Feast requires SQLAlchemy[mypy])
    for dev in ("pytest", "ruff", "hypothesis", "locust", "schemathesis", "hadolint"):
        assert not (venv / "bin" / dev).exists(), dev


@pytest.fixture(scope="module")
def running_image(
    image_root: Emulator,
    stages: list[Stage],
    redis_url: str,
    redis_store: Any,
    model_bundle: Path,
) -> Iterator[tuple[Child, str, dict[str, str]]]:
    app = image_root.rootfs / "app"
    shutil.copytree(model_bundle, app / "models", dirs_exist_ok=True)  # "-v models:/app/models"
    port = free_port()
    env = {
        **image_root.env,
        "NEXTBEST_HOST": "127.0.0.1",  # the image listens on 0.0.0.0; a test stays on loopback
        "NEXTBEST_WORKERS": "2",  # the image runs 1; `-e NEXTBEST_WORKERS=2` must work too
        "NEXTBEST_PORT": str(port),
        "NEXTBEST_REDIS_URL": redis_url,
        "NEXTBEST_API_KEYS": API_KEY,
        "NEXTBEST_LOG_LEVEL": "WARNING",
    }
    cmd = stages[-1].last("CMD")
    assert cmd is not None
    log = image_root.rootfs.parent / "image-service.log"
    with Child(cmd.exec_form(), log, env=env, cwd=app) as child:
        base = f"http://127.0.0.1:{port}"
        wait_http(child, f"{base}/ready", READY_TIMEOUT_S)
        yield child, base, env


def test_image_starts_serves_and_passes_its_healthcheck(
    running_image: tuple[Child, str, dict[str, str]], stages: list[Stage], image_root: Emulator
) -> None:
    child, base, env = running_image
    assert env["NEXTBEST_WORKERS"] == "2" and image_root.env["NEXTBEST_WORKERS"] == "1"
    ready = httpx.get(f"{base}/ready", timeout=10).json()
    assert ready == {"ready": True, "problems": []}
    models = httpx.get(f"{base}/models", timeout=10).json()["loaded"]
    assert models["source"] == "bundle"  # never the server's folder
    resp = httpx.post(
        f"{base}/decide",
        json={"customer_id": "C0000001", "context": {"placement": "campaign"}},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=30,
    )
    assert resp.status_code == 200 and len(resp.json()["model_versions"]) == 3, resp.text
    health = stages[-1].last("HEALTHCHECK")
    assert health is not None
    check = health.args.split(None, 1)[1]  # "CMD [...]"
    hc = subprocess.run(
        json.loads(check),
        env=env,
        cwd=image_root.rootfs / "app",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert hc.returncode == 0, hc.stderr
    assert child.stop(grace_s=20) == 0, child.tail()  # `docker stop`: SIGTERM, clean exit


# ------------------------------------------------------------------------ compose.yaml
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return spec


def _documented_settings() -> set[str]:
    from contracts.settings import VARIABLES

    return {v.name for v in VARIABLES}


def test_compose_runs_the_stack_from_this_image(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"redis", "postgres", "mlflow", "train", "service"}
    for name in ("mlflow", "train", "service"):
        assert services[name]["build"] == "." and services[name]["image"] == "nextbest:local"
    assert "command" not in services["service"]  # the image's CMD: `python -m service`
    deps = services["service"]["depends_on"]
    assert deps["train"]["condition"] == "service_completed_successfully"
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_compose_commands_and_settings_are_real(compose: dict[str, Any]) -> None:
    from training.cli import build_parser, cmd_all

    services = compose["services"]
    train = [str(x) for x in services["train"]["command"]]
    assert train[:3] == ["python", "-m", "training"]
    args = build_parser().parse_args(train[3:])
    assert args.func is cmd_all and args.online == "redis"
    mlflow_cmd = [str(x) for x in services["mlflow"]["command"]]
    mlflow_port = mlflow_cmd[mlflow_cmd.index("--port") + 1]
    documented = _documented_settings()
    for name in ("train", "service"):
        env = services[name]["environment"]
        unknown = {k for k in env if k not in documented}
        assert not unknown, f"{name}: undocumented settings {unknown}"
        redis = urlparse(env["NEXTBEST_REDIS_URL"])
        assert redis.hostname in services and redis.port == 6379
        tracking = urlparse(env["MLFLOW_TRACKING_URI"])
        assert tracking.hostname == "mlflow" and str(tracking.port) == mlflow_port
