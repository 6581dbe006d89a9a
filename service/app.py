"""The application factory: `create_app(settings)`; resources open and close in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from litestar import Litestar, Request, Response
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import OpenAPIConfig
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from service.adapters.feast_redis import FeastRedisLayout
from service.adapters.models import ModelError, ModelSet, load_bundle, load_mlflow_champions
from service.adapters.redis_store import RedisStore
from service.adapters.spool import Spool
from service.api.routes import AdminController, DecisionController, OpsController
from service.domain.config import load_policy
from service.engine import DecisionEngine, RequestError, UnknownDecision
from service.features.vectors import RAW_FEATURES
from service.models_manager import ModelManager
from service.observability import Metrics, configure_logging
from service.schemas import ErrorBody
from service.security import RateLimited, keyring_from_settings
from service.settings import Settings

__all__ = ["create_app", "load_models"]

log = logging.getLogger("nextbest.app")
_PATH = re.compile(r"at `\$\.?([^`]*)`")


def redis_client(settings: Settings) -> Any:
    """A pooled asyncio client (or cluster client); retries with backoff, bounded timeouts."""
    timeout = max(settings.redis_timeout_ms / 1000.0 * 4, 0.1)
    common: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(ExponentialBackoff(cap=0.05, base=0.005), retries=1),
    }
    if settings.redis_cluster:
        return aioredis.RedisCluster.from_url(settings.redis_url, **common)
    return aioredis.Redis.from_url(
        settings.redis_url, health_check_interval=10, max_connections=256, **common
    )


def load_models(settings: Settings) -> ModelSet:
    if settings.mlflow_tracking_uri:
        return load_mlflow_champions(settings.models_dir, settings.model_alias)
    return load_bundle(settings.models_dir)


def _error(status: int, error: str, message: str, field: str | None) -> Response[ErrorBody]:
    return Response(ErrorBody(error=error, message=message, field=field), status_code=status)


def _validation_handler(_: Request[Any, Any, Any], exc: ValidationException) -> Response[ErrorBody]:
    messages = []
    field = None
    for item in exc.extra or []:
        if isinstance(item, dict):
            msg = str(item.get("message", ""))
            messages.append(msg)
            m = _PATH.search(msg)
            if field is None:
                field = m.group(1) if m else (item.get("key") or None)
    message = "; ".join(messages) or str(exc.detail)
    if field is None:
        m = re.search(r"unknown field `([^`]*)`", message)
        field = m.group(1) if m else "body"
    return _error(400, "invalid_request", message, field)


def _request_error_handler(_: Request[Any, Any, Any], exc: RequestError) -> Response[ErrorBody]:
    return _error(exc.status, "unprocessable_request", exc.message, exc.field)


def _unknown_decision_handler(
    _: Request[Any, Any, Any], exc: UnknownDecision
) -> Response[ErrorBody]:
    return _error(404, "unknown_decision", f"no decision {exc.args[0]!r}", "decision_id")


def _http_handler(_: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorBody]:
    err = {413: "body_too_large", 404: "not_found", 405: "method_not_allowed"}.get(
        exc.status_code, "http_error"
    )
    return _error(exc.status_code, err, str(exc.detail), None)


def _rate_limited_handler(_: Request[Any, Any, Any], exc: RateLimited) -> Response[ErrorBody]:
    resp = _error(429, "rate_limited", "rate limit exceeded", None)
    resp.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return resp


def _internal_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    log.exception("unhandled error: %s", type(exc).__name__)
    return _error(HTTP_500_INTERNAL_SERVER_ERROR, "internal_error", "internal error", None)


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level)
    keyring = keyring_from_settings(settings)  # refuses to start with no key (unless dev mode)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        policy = load_policy(settings.policy_file)
        client = redis_client(settings)
        layout = FeastRedisLayout(RAW_FEATURES, project=settings.feast_project)
        store = RedisStore(client, layout, policy.contact_policy, log_maxlen=settings.log_maxlen)
        models: ModelSet | None = None
        model_error = None
        try:
            models = await asyncio.to_thread(load_models, settings)
            models.warm_up()
        except (ModelError, Exception) as exc:
            model_error = f"models not loaded: {exc}"
            log.error(model_error)
        engine = DecisionEngine(
            models,
            policy,
            store,
            Spool(settings.spool_dir),
            Metrics(),
            settings.redis_timeout_ms / 1000.0,
        )
        manager = ModelManager(engine, settings)
        manager.last_error = model_error
        app.state.engine = engine
        app.state.settings = settings
        app.state.model_manager = manager
        tasks = [asyncio.create_task(_replay_loop(engine)), asyncio.create_task(manager.poll())]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            with contextlib.suppress(Exception):
                await _replay_once(engine)
            await store.close()

    return Litestar(
        route_handlers=[DecisionController, OpsController, AdminController],
        state=State({"keyring": keyring}),
        cors_config=(
            CORSConfig(allow_origins=[o.strip() for o in settings.cors_origins.split(",")])
            if settings.cors_origins
            else None
        ),
        lifespan=[lifespan],
        exception_handlers={
            ValidationException: _validation_handler,
            RequestError: _request_error_handler,
            UnknownDecision: _unknown_decision_handler,
            HTTPException: _http_handler,
            RateLimited: _rate_limited_handler,
            Exception: _internal_handler,
        },
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(title="nextbest", version="0.1.0", path="/schema"),
        debug=False,
    )


async def _replay_once(engine: DecisionEngine) -> int:
    store = engine.store

    async def send(kind: str, id_: str, payload: bytes, extra: bytes | None) -> None:
        if kind == "decision":
            await store.append_decision(id_, payload, extra)  # idempotent by decision id
        else:
            await store.append_feedback(id_, (extra or b"").decode(), payload)

    return await engine.spool.replay(send)


async def _replay_loop(engine: DecisionEngine, every_s: float = 1.0) -> None:
    while True:
        await asyncio.sleep(every_s)
        try:
            if engine.spool.pending():
                await engine.store.ping()
                n = await _replay_once(engine)
                if n:
                    log.info("replayed %d spooled log records", n)
        except Exception as exc:
            log.debug("spool replay deferred: %s", type(exc).__name__)
