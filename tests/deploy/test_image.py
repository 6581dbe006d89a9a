"""The container images and compose.yaml, kept honest without a Docker engine.

No Docker engine runs on the development machines, so the images are checked by what they run:

* hadolint lints the Dockerfile (every finding fails, .hadolint.yaml);
* each target's build steps (``serve``, the default, and ``train``: COPY from the context,
  WORKDIR, ENV, every RUN) are replayed into a fresh folder standing for the image's root,
  creating a fresh virtual environment exactly as the image does (uv from its cache:
  ``UV_OFFLINE=1`` is the one addition); only the root-only commands (OS packages, the
  service user) are skipped, and the test names them. Each environment must hold exactly its
  lock file (requirements/serve.txt, requirements/train.txt) plus the project;
* the ``serve`` image's CMD starts the service with the image's ENV plus NEXTBEST_WORKERS=2 (as
  ``docker run -e``: the multi-worker start), a model bundle in ``models/`` as if mounted, on a
  loopback port; ``/ready`` answers, the HEALTHCHECK command exits 0, a decision is made,
  Prometheus' scrape path answers, SIGTERM stops it cleanly; the ``train`` image's CLIs run;
* compose.yaml's profiles, images, commands and volumes are checked against the real CLIs,
  settings and deploy/prometheus.yml.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
import yaml
from packaging.markers import Marker
from packaging.utils import canonicalize_name

from tests.deploy.conftest import API_KEY, READY_TIMEOUT_S, ROOT, dockerfile_stages, tool
from tests.deploy.dockerfile import SYSTEM_COMMANDS, Emulator, Stage, target, tree_bytes
from tests.deploy.processes import Child, free_port, wait_http

pytestmark = [pytest.mark.slow]  # the service start needs Redis (redis_url)

DOCKERFILE = ROOT / "Dockerfile"
LOCKS = ROOT / "requirements"
#: what only training needs: none of it may reach the service image
TRAINING_ONLY = ("feast", "mlflow", "lightgbm", "scikit-learn", "scipy", "pandas", "pyarrow")
TRAINING_ONLY += ("matplotlib", "onnxmltools", "sqlalchemy", "psycopg", "locust")
DEV_TOOLS = ("pytest", "ruff", "mypy", "hypothesis", "schemathesis", "hadolint", "mkdocs", "uv")
#: the service image's installed environment stays under this (it was 1.18 GB when the image
#: also carried the training stack; measured like this, see docs/operations.md)
SERVE_ENV_MAX_BYTES = 400_000_000


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return dockerfile_stages()


def locked(lock: Path) -> dict[str, str]:
    """name -> version of a lock file's pins that apply to this interpreter (the image's)."""
    out = {}
    for line in lock.read_text().splitlines():
        if not line or line[0] in " #-":
            continue  # hashes, comments, options
        req, _, marker = line.rstrip(" \\").partition(" ; ")
        if marker and not Marker(marker).evaluate():
            continue
        name, _, version = req.partition("==")
        out[canonicalize_name(name)] = version
    return out


def installed(python: Path) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json; "
        "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
    )
    proc = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, check=True, env={}
    )
    return {canonicalize_name(k): v for k, v in json.loads(proc.stdout).items()}


def test_hadolint_passes() -> None:
    proc = subprocess.run(
        [tool("hadolint"), "--config", str(ROOT / ".hadolint.yaml"), str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


class TestDockerfile:
    def test_two_targets_service_by_default(self, stages: list[Stage]) -> None:
        """Each image is a build stage and a final stage on slim 3.11 bases; a plain
        `docker build` (the last stage) makes the service image."""
        assert [s.name for s in stages] == ["build-train", "train", "build-serve", "serve"]
        for s in stages:
            assert re.fullmatch(r"python:3\.11-slim(-\w+)?", s.image), s.image
        assert [s.name for s in target(stages)] == ["build-serve", "serve"]
        assert [s.name for s in target(stages, "train")] == ["build-train", "train"]

    @pytest.mark.parametrize(
        ("name", "lock", "os_packages"),
        [("serve", "serve.txt", set()), ("train", "train.txt", {"libgomp1"})],
    )
    def test_target_installs_one_lock_and_runs_as_a_user(
        self, stages: list[Stage], name: str, lock: str, os_packages: set[str]
    ) -> None:
        build, final = target(stages, name)
        runs = " && ".join(st.args for st in build.steps if st.op == "RUN")
        assert re.findall(r"uv pip sync [^&]*?(requirements/\S+)", runs) == [f"requirements/{lock}"]
        assert re.search(r"uv pip install [^&]*--no-deps -e \.", runs), runs
        copies = [st for st in final.steps if st.op == "COPY"]
        assert all(st.flags.get("from") == build.name for st in copies), "context COPY at run time"
        assert {st.args.split()[0] for st in copies} == {"/opt/venv", "/app"}
        user = final.last("USER")
        assert user is not None and user.args.split(":")[0] not in ("root", "0")
        final_runs = " && ".join(st.args for st in final.steps if st.op == "RUN")
        installs = re.findall(r"apt-get install [^&]*", final_runs)
        packages = {
            p.split("=")[0] for i in installs for p in i.split()[2:] if not p.startswith("-")
        }
        assert packages == os_packages  # no compiler or build tool at run time

    def test_serve_checks_health_and_starts_the_service(self, stages: list[Stage]) -> None:
        final = stages[-1]
        health = final.last("HEALTHCHECK")
        assert health is not None and "/health" in health.args
        cmd = final.last("CMD")
        assert cmd is not None and cmd.exec_form() == ["python", "-m", "service"]


class TestLocks:
    """requirements/*.txt are `make lock`'s output for pyproject.toml, and agree with each other."""

    def test_every_pin_is_hashed_and_versions_agree(self) -> None:
        dev = locked(LOCKS / "dev.txt")
        for name in ("serve.txt", "train.txt"):
            text = (LOCKS / name).read_text()
            assert "make lock" in text.splitlines()[1], "regenerate with `make lock`"
            pins = [ln for ln in text.splitlines() if ln and ln[0] not in " #-"]
            assert pins and all(ln.endswith("\\") for ln in pins), f"{name}: a pin without hashes"
            for pkg, version in locked(LOCKS / name).items():
                assert dev.get(pkg) == version, f"{name}: {pkg}=={version}, dev.txt {dev.get(pkg)}"

    def test_locks_satisfy_pyproject(self) -> None:
        """A dependency added to pyproject.toml without `make lock` fails here."""
        import tomllib

        from packaging.requirements import Requirement

        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        extras: dict[str, list[str]] = project["optional-dependencies"]

        def reqs(names: list[str]) -> list[Requirement]:
            out = [Requirement(r) for r in project["dependencies"]]
            for extra in names:
                for r in map(Requirement, extras[extra]):
                    if r.name == project["name"]:
                        out += reqs(sorted(r.extras))[len(project["dependencies"]) :]
                    else:
                        out.append(r)
            return out

        for lock, names in (
            ("serve.txt", ["serve"]),
            ("train.txt", ["train", "postgres", "load"]),
            ("dev.txt", list(extras)),
        ):
            pins = locked(LOCKS / lock)
            for r in reqs(names):
                if r.marker is not None and not r.marker.evaluate():
                    continue
                version = pins.get(canonicalize_name(r.name))
                assert version is not None, f"{lock}: {r.name} missing: run `make lock`"
                assert r.specifier.contains(version, prereleases=True), f"{lock}: {r} vs {version}"

    def test_serve_lock_holds_no_training_stack(self) -> None:
        pins = locked(LOCKS / "serve.txt")
        assert not set(map(canonicalize_name, TRAINING_ONLY + DEV_TOOLS)) & set(pins)
        assert "mlflow-skinny" in pins  # MLflow's client: models:/<name>@<alias>


def test_serve_image_holds_exactly_its_lock(serve_image: Emulator) -> None:
    venv = serve_image.rootfs / "opt" / "venv"
    assert (venv / "pyvenv.cfg").exists()
    assert any("uv pip sync" in c for c in serve_image.ran)
    # everything not run needs root inside an image, and is listed as such
    assert serve_image.skipped and all(c.startswith(SYSTEM_COMMANDS) for c in serve_image.skipped)
    have = installed(venv / "bin" / "python")
    assert have.pop("nextbest") == "0.1.0"
    assert have == locked(LOCKS / "serve.txt")
    # the project is installed from /app, and has no training code to import
    probe = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import importlib.util, service; from mlflow import MlflowClient, artifacts; "
            "print(service.__file__, importlib.util.find_spec('training'))",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
        cwd=serve_image.rootfs,  # not /app: the installed project must point there by itself
    )
    path, spec = probe.stdout.split()
    assert path == str(serve_image.rootfs / "app" / "service" / "__init__.py")
    assert spec == "None"
    assert tree_bytes(venv) < SERVE_ENV_MAX_BYTES


def test_train_image_runs_the_offline_tools(train_image: Emulator) -> None:
    venv = train_image.rootfs / "opt" / "venv"
    have = installed(venv / "bin" / "python")
    assert have.pop("nextbest") == "0.1.0"
    assert have == locked(LOCKS / "train.txt")
    # dependencies of dependencies: Locust requires pytest, Feast SQLAlchemy[mypy]
    tools = set(DEV_TOOLS) - {"pytest", "mypy"}
    assert not tools & set(have), tools & set(have)
    env = {**train_image.env, "HOME": str(train_image.rootfs / "app")}
    cmd = target(dockerfile_stages(), "train")[-1].last("CMD")
    assert cmd is not None
    for args in (
        cmd.exec_form(),  # python -m training --help
        ["python", "-m", "training", "all", "--help"],
        ["mlflow", "server", "--help"],
        ["locust", "--version"],
        ["python", "-c", "import feast, lightgbm, onnxmltools, psycopg, sklearn"],
    ):
        proc = subprocess.run(
            args,
            env=env,
            cwd=train_image.rootfs / "app",
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert proc.returncode == 0, f"{args}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"


@pytest.fixture(scope="module")
def running_image(
    serve_image: Emulator,
    stages: list[Stage],
    redis_url: str,
    redis_store: Any,
    model_bundle: Path,
) -> Iterator[tuple[Child, str, dict[str, str]]]:
    app = serve_image.rootfs / "app"
    shutil.copytree(model_bundle, app / "models", dirs_exist_ok=True)  # "-v models:/app/models"
    port = free_port()
    env = {
        **serve_image.env,
        "NEXTBEST_HOST": "127.0.0.1",  # the image listens on 0.0.0.0; a test stays on loopback
        "NEXTBEST_WORKERS": "2",  # the image runs 1; `-e NEXTBEST_WORKERS=2` must work too
        "NEXTBEST_PORT": str(port),
        "NEXTBEST_REDIS_URL": redis_url,
        "NEXTBEST_API_KEYS": API_KEY,
        "NEXTBEST_LOG_LEVEL": "WARNING",
    }
    cmd = stages[-1].last("CMD")
    assert cmd is not None
    log = serve_image.rootfs.parent / "image-service.log"
    with Child(cmd.exec_form(), log, env=env, cwd=app) as child:
        base = f"http://127.0.0.1:{port}"
        wait_http(child, f"{base}/ready", READY_TIMEOUT_S)
        yield child, base, env


def test_image_starts_serves_and_passes_its_healthcheck(
    running_image: tuple[Child, str, dict[str, str]], stages: list[Stage], serve_image: Emulator
) -> None:
    child, base, env = running_image
    assert env["NEXTBEST_WORKERS"] == "2" and serve_image.env["NEXTBEST_WORKERS"] == "1"
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
    # what compose's Prometheus scrapes (deploy/prometheus.yml): the path, without a key
    scrape = prometheus_job()
    metrics = httpx.get(f"{base}{scrape['metrics_path']}", timeout=10)
    assert metrics.status_code == 200 and "nextbest_decisions_total" in metrics.text
    health = stages[-1].last("HEALTHCHECK")
    assert health is not None
    check = health.args.split(None, 1)[1]  # "CMD [...]"
    hc = subprocess.run(
        json.loads(check),
        env=env,
        cwd=serve_image.rootfs / "app",
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


def prometheus_job(name: str = "nextbest") -> dict[str, Any]:
    spec = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    (job,) = [j for j in spec["scrape_configs"] if j["job_name"] == name]
    return dict(job)


def _documented_settings() -> set[str]:
    from contracts.settings import VARIABLES

    return {v.name for v in VARIABLES}


def _image_env(name: str) -> dict[str, str]:
    """The ENV a final stage sets (values as written)."""
    out: dict[str, str] = {}
    for st in target(dockerfile_stages(), name)[-1].steps:
        if st.op == "ENV":
            out.update(kv.split("=", 1) for kv in st.args.split())
    return out


class TestCompose:
    def test_redis_and_the_service_by_default_the_rest_behind_profiles(
        self, compose: dict[str, Any]
    ) -> None:
        services = compose["services"]
        profiles = {n: tuple(s.get("profiles", ())) for n, s in services.items()}
        assert profiles == {
            "redis": (),
            "service": (),
            "exporter": (),
            "postgres": ("train",),
            "mlflow": ("train",),
            "train": ("train",),
            "prometheus": ("monitoring",),
            "locust": ("load",),
        }

    def test_each_service_runs_its_image_target(self, compose: dict[str, Any]) -> None:
        services = compose["services"]
        built = {n: s for n, s in services.items() if "build" in s}
        assert {n: s["build"]["target"] for n, s in built.items()} == {
            "service": "serve",
            "exporter": "train",  # pyarrow: not in the service image
            "mlflow": "train",
            "train": "train",
            "locust": "train",
        }
        for s in built.values():
            assert s["build"]["context"] == "."
            assert (
                s["image"]
                == {"serve": "nextbest:local", "train": "nextbest-train:local"}[
                    s["build"]["target"]
                ]
            )
        assert "command" not in services["service"]  # the image's CMD: `python -m service`

    def test_the_service_serves_what_the_job_exported(self, compose: dict[str, Any]) -> None:
        from training.cli import build_parser, cmd_all

        services = compose["services"]
        service, train = services["service"], services["train"]
        deps = service["depends_on"]
        assert deps["redis"]["condition"] == "service_healthy"
        # with the train profile the service waits for the job; without it, it starts alone
        assert deps["train"] == {"condition": "service_completed_successfully", "required": False}
        assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
        cmd = [str(x) for x in train["command"]]
        assert cmd[:3] == ["python", "-m", "training"]
        args = build_parser().parse_args(cmd[3:])
        assert args.func is cmd_all and args.online == "redis"
        mounts = {v.split(":")[1]: v for v in service["volumes"]}
        models = service["environment"]["NEXTBEST_MODELS_DIR"]
        assert str(args.out) == models and mounts[models].endswith(":ro")
        volume = mounts[models].split(":")[0]
        assert f"{volume}:{models}" in train["volumes"] and volume in compose["volumes"]

    def test_commands_and_settings_are_real(self, compose: dict[str, Any]) -> None:
        services = compose["services"]
        mlflow_cmd = [str(x) for x in services["mlflow"]["command"]]
        mlflow_port = mlflow_cmd[mlflow_cmd.index("--port") + 1]
        documented = _documented_settings()
        for name in ("train", "service", "exporter"):
            env = services[name]["environment"]
            unknown = {k for k in env if k not in documented}
            assert not unknown, f"{name}: undocumented settings {unknown}"
            redis = urlparse(env["NEXTBEST_REDIS_URL"])
            assert redis.hostname in services and redis.port == 6379
        tracking = urlparse(services["train"]["environment"]["MLFLOW_TRACKING_URI"])
        assert tracking.hostname == "mlflow" and str(tracking.port) == mlflow_port

    def test_the_exporter_drains_the_log_of_the_services_redis(
        self, compose: dict[str, Any]
    ) -> None:
        from contracts.settings import Settings

        services = compose["services"]
        exporter = services["exporter"]
        assert exporter["command"] == ["python", "-m", "service.exporter"]
        env = exporter["environment"]
        assert env["NEXTBEST_REDIS_URL"] == services["service"]["environment"]["NEXTBEST_REDIS_URL"]
        Settings.from_env({k: str(v) for k, v in env.items()})  # values the exporter accepts
        log_volume = f"decision-log:{env['NEXTBEST_LOG_URL']}"
        assert log_volume in exporter["volumes"] and "decision-log" in compose["volumes"]
        # the train image makes that folder writable for its user (a fresh volume copies it)
        assert env["NEXTBEST_LOG_URL"] in " ".join(
            st.args for st in target(dockerfile_stages(), "train")[-1].steps if st.op == "RUN"
        )
        # Redis never evicts: the service refuses an evicting policy at start
        assert "noeviction" in services["redis"]["command"]
        job = prometheus_job("nextbest-exporter")
        (static,) = job["static_configs"]
        assert static["targets"] == [f"exporter:{env['NEXTBEST_EXPORTER_METRICS_PORT']}"]
        prom = services["prometheus"]
        rules = next(v for v in prom["volumes"] if v.startswith("./deploy/alerts.yml:"))
        spec = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
        assert spec["rule_files"] == [rules.split(":")[1]]
        alerts = yaml.safe_load((ROOT / "deploy" / "alerts.yml").read_text())
        exprs = " ".join(r["expr"] for g in alerts["groups"] for r in g["rules"])
        from service.exporter import ExporterMetrics

        names = {m.name for m in ExporterMetrics().registry.collect()}
        used = set(re.findall(r"\b(nextbest_[a-z_]+)", exprs))
        assert used and used <= names, used - names

    def test_locust_drives_the_service_with_the_jobs_world(self, compose: dict[str, Any]) -> None:
        services = compose["services"]
        locust = [str(x) for x in services["locust"]["command"]]
        assert locust[0] == "locust"
        assert (ROOT / locust[locust.index("-f") + 1]).is_file()
        host = urlparse(locust[locust.index("--host") + 1])
        assert host.hostname == "service" and str(host.port) == _image_env("serve")["NEXTBEST_PORT"]
        env = services["locust"]["environment"]
        var = _image_env("train")["NEXTBEST_VAR_DIR"]  # where the job writes its world
        assert env["NEXTBEST_DATA_DIR"] == f"{var}/world"  # training/settings.py's default
        assert f"train-data:{var}:ro" in services["locust"]["volumes"]
        assert f"train-data:{var}" in services["train"]["volumes"]

    def test_prometheus_scrapes_every_service_replica(self, compose: dict[str, Any]) -> None:
        prom = compose["services"]["prometheus"]
        config = next(v for v in prom["volumes"] if v.startswith("./deploy/prometheus.yml:"))
        assert config.split(":")[1] in " ".join(prom["command"])
        job = prometheus_job()
        (sd,) = job["dns_sd_configs"]
        assert sd["names"] == ["service"] and sd["type"] == "A"
        assert str(sd["port"]) == _image_env("serve")["NEXTBEST_PORT"]
