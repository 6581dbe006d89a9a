# syntax=docker/dockerfile:1
# nextbest: two images from one file, each installing exactly one lock file (requirements/).
#
#   docker build -t nextbest .                       # target `serve` (the last stage): the service
#   docker build --target train -t nextbest-train .  # the training job, MLflow server, Locust
#
#   docker run -p 8000:8000 -e NEXTBEST_REDIS_URL=redis://redis:6379/0 \
#     -e NEXTBEST_API_KEYS=sha256:<hex> -v "$PWD/models:/app/models:ro" nextbest
#
# serve holds what `python -m service` imports and MLflow's client (requirements/serve.txt):
# models from a bundle mounted at /app/models, or MLFLOW_TRACKING_URI=http://mlflow:5000
# (registry alias NEXTBEST_MODEL_ALIAS, default champion). No Feast SDK, LightGBM, pandas or
# MLflow server: NEXTBEST_FEATURE_SOURCE=feast needs the train image. One worker process per
# container: scale by adding replicas (all state is in Redis); NEXTBEST_WORKERS=N runs N, but
# /metrics then shows one worker per scrape (prometheus_client keeps metrics per process).
# compose.yaml runs the stack. tests/deploy/test_image.py runs this file's install and start
# commands (every RUN, ENV, WORKDIR, COPY and the CMD/HEALTHCHECK) per target in a fresh
# virtual environment, and lints it with hadolint (.hadolint.yaml).

# ---------------------------------------------------------------- train: the offline side
FROM python:3.11-slim-bookworm AS build-train
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_PYTHON_DOWNLOADS=never
WORKDIR /app
# Dependencies first (one layer per lock change), then the project without dependencies.
COPY requirements/train.txt ./requirements/
RUN python -m venv --without-pip /opt/venv \
 && uv pip sync --python /opt/venv/bin/python --no-progress requirements/train.txt
COPY pyproject.toml README.md ./
COPY contracts ./contracts
COPY service ./service
COPY training ./training
COPY feature_repo ./feature_repo
COPY loadtests ./loadtests
# Installed in development mode so /app is the project's root, laid out as in the repository
# (service/config, feature_repo/, models/, var/), where the code looks for them.
RUN uv pip install --python /opt/venv/bin/python --no-progress --no-deps -e . \
 && /opt/venv/bin/python -m compileall -q contracts service training loadtests

FROM python:3.11-slim-bookworm AS train
# libgomp1: OpenMP runtime of LightGBM; nothing else beyond the slim base.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1=12.2.0-14+deb12u1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 nextbest \
 && useradd --system --uid 10001 --gid nextbest --home-dir /app --shell /usr/sbin/nologin nextbest
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NEXTBEST_VAR_DIR=/app/var
WORKDIR /app
COPY --from=build-train /opt/venv /opt/venv
COPY --from=build-train /app /app
# var/ (the job's data, MLflow artifacts, the exporter's decision log) and models/ (the exported
# bundle) are writable. The image also runs the log exporter: `python -m service.exporter`.
RUN mkdir -p /app/var/mlartifacts /app/var/log /app/models \
 && chown -R 10001:10001 /app/var /app/models
USER 10001:10001
CMD ["python", "-m", "training", "--help"]

# ---------------------------------------------------------------- serve: the decision service
FROM python:3.11-slim-bookworm AS build-serve
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_PYTHON_DOWNLOADS=never
WORKDIR /app
COPY requirements/serve.txt ./requirements/
RUN python -m venv --without-pip /opt/venv \
 && uv pip sync --python /opt/venv/bin/python --no-progress requirements/serve.txt
COPY pyproject.toml README.md ./
COPY contracts ./contracts
COPY service ./service
RUN uv pip install --python /opt/venv/bin/python --no-progress --no-deps -e . \
 && /opt/venv/bin/python -m compileall -q contracts service

FROM python:3.11-slim-bookworm AS serve
RUN groupadd --system --gid 10001 nextbest \
 && useradd --system --uid 10001 --gid nextbest --home-dir /app --shell /usr/sbin/nologin nextbest
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NEXTBEST_HOST=0.0.0.0 \
    NEXTBEST_PORT=8000 \
    NEXTBEST_WORKERS=1 \
    NEXTBEST_VAR_DIR=/app/var
WORKDIR /app
COPY --from=build-serve /opt/venv /opt/venv
COPY --from=build-serve /app /app
# Code and dependencies stay root-owned (read-only for the service); only var/ (the spool)
# and models/ (a bundle, or mount one) belong to the service user.
RUN mkdir -p /app/var/spool /app/models \
 && chown -R 10001:10001 /app/var /app/models
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; url = 'http://127.0.0.1:%s/health' % os.environ.get('NEXTBEST_PORT', '8000'); sys.exit(0 if urllib.request.urlopen(url, timeout=2).status == 200 else 1)"]
CMD ["python", "-m", "service"]
