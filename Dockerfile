# syntax=docker/dockerfile:1
# nextbest decision service. Build: docker build -t nextbest .
# Run:  docker run -p 8000:8000 -e NEXTBEST_REDIS_URL=redis://redis:6379/0 \
#         -e NEXTBEST_API_KEYS=sha256:<hex> -v $PWD/models:/app/models:ro nextbest
# The install and start commands below are exercised by tests/deploy/test_image_commands.py.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY service ./service
COPY training ./training
RUN /opt/venv/bin/pip install --no-compile . \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib

FROM python:3.11-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    NEXTBEST_HOST=0.0.0.0 \
    NEXTBEST_PORT=8000 \
    NEXTBEST_WORKERS=2 \
    NEXTBEST_MODELS_DIR=/app/models \
    NEXTBEST_SPOOL_DIR=/app/var/spool
RUN groupadd --system --gid 10001 nextbest \
 && useradd --system --uid 10001 --gid nextbest --home-dir /app --shell /usr/sbin/nologin nextbest
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY --chown=nextbest:nextbest service/config ./service-config
COPY --chown=nextbest:nextbest models ./models
RUN mkdir -p /app/var/spool && chown -R nextbest:nextbest /app/var
ENV NEXTBEST_POLICY_FILE=/app/service-config/policy.yaml
USER nextbest
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=2s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request,os,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('NEXTBEST_PORT','8000'), timeout=2).status == 200 else 1)"]
CMD ["python", "-m", "service"]
