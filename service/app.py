"""The application factory: `create_app(settings)`; resources open and close in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
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
from service.adapters.feast_sdk import FeastSdkFeatures
from service.adapters.models import ModelError, ModelSet, load_bundle, load_mlflow_champions
from service.adapters.redis_store import RedisStore
from service.adapters.spool import Spool
from service.api.openapi import tighten_openapi
from service.api.routes import AdminController, DecisionController, OpsController
from service.background import sleep_or_stop, stop_tasks
from service.domain.config import load_policy
from service.engine import EFFECT_EVENTS, DecisionEngine, RequestError, UnknownDecision
from service.errors import Unavailable
from service.features.vectors import RAW_FEATURES
from service.models_manager import ModelManager
from service.observability import Metrics, configure_logging
from service.realtime.routes import EventsController
from service.realtime.service import build_realtime
from service.schemas import ErrorBody
from service.security import RateLimited, keyring_from_settings
from service.settings import Settings

__all__ = ["create_app", "load_models"]

log = logging.getLogger("nextbest.app")
_decode_payload = msgspec.json.Decoder(dict[str, Any])
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


def feature_reader(settings: Settings) -> FeastSdkFeatures | None:
    """The Feast SDK reader when NEXTBEST_FEATURE_SOURCE=feast (None: the direct Redis read).

    The store is opened the way the offline tools open it (training/featurestore.py: the
    repository's feature_store*.yaml for NEXTBEST_ONLINE_STORE, registry under
    NEXTBEST_VAR_DIR), so both sides always read the same repository.
    """
    if settings.feature_source != "feast":
        return None
    from training.pipeline.featurestore import feature_store

    return FeastSdkFeatures(feature_store(), RAW_FEATURES)


def load_models(settings: Settings) -> ModelSet:
    if settings.mlflow_tracking_uri:
        return load_mlflow_champions(settings.model_alias)
    return load_bundle(settings.models_dir)


def _error(status: int, error: str, message: str, field: str | None) -> Response[ErrorBody]:
    return Response(ErrorBody(error=error, message=message, field=field), status_code=status)


_NAMED = re.compile(r"(?:unknown|missing required) field `([^`]*)`")


def _field_of(item: dict[str, Any]) -> str:
    """The dotted path of the offending field, from one item of Litestar's error list.

    Litestar reports the path of the object that failed (``data`` for the body itself,
    ``context`` for a nested object); an unknown or missing field is named in the message.
    """
    msg = str(item.get("message", ""))
    key = str(item.get("key") or "")
    key = "" if key in ("data", "body") else key
    m = _PATH.search(msg)
    if m and m.group(1):
        key = f"{key}.{m.group(1)}" if key else m.group(1)
    named = _NAMED.search(msg)
    if named:
        return f"{key}.{named.group(1)}" if key else named.group(1)
    return key or "body"


def _validation_handler(_: Request[Any, Any, Any], exc: ValidationException) -> Response[ErrorBody]:
    items = [i for i in (exc.extra or []) if isinstance(i, dict)]
    message = "; ".join(str(i.get("message", "")) for i in items) or str(exc.detail)
    field = _field_of(items[0]) if items else "body"
    return _error(400, "invalid_request", message, field)


def _request_error_handler(_: Request[Any, Any, Any], exc: RequestError) -> Response[ErrorBody]:
    return _error(exc.status, "unprocessable_request", exc.message, exc.field)


def _unknown_decision_handler(
    _: Request[Any, Any, Any], exc: UnknownDecision
) -> Response[ErrorBody]:
    return _error(404, "unknown_decision", f"no decision {exc.args[0]!r}", "decision_id")


def _http_handler(_: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorBody]:
    if exc.status_code == 400:  # malformed JSON, bad content-length, ...
        return _error(400, "invalid_request", str(exc.detail), "body")
    err = {413: "body_too_large", 404: "not_found", 405: "method_not_allowed"}.get(
        exc.status_code, "http_error"
    )
    field = "body" if exc.status_code == 413 else None
    return _error(exc.status_code, err, str(exc.detail), field)


def _rate_limited_handler(_: Request[Any, Any, Any], exc: RateLimited) -> Response[ErrorBody]:
    resp = _error(429, "rate_limited", "rate limit exceeded", None)
    resp.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return resp


def _unavailable_handler(_: Request[Any, Any, Any], exc: Unavailable) -> Response[ErrorBody]:
    resp = _error(503, "unavailable", exc.message, None)
    resp.headers["Retry-After"] = str(exc.retry_after_s)
    return resp


def _internal_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    log.exception("unhandled error: %s", type(exc).__name__)
    return _error(HTTP_500_INTERNAL_SERVER_ERROR, "internal_error", "internal error", None)


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level)
    keyring = keyring_from_settings(settings)  # refuses to start with no key (unless dev mode)
    policy = load_policy(settings.policy_file)  # a broken policy file stops the start here

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
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
            features=await asyncio.to_thread(feature_reader, settings),
            feature_timeout_s=settings.feature_timeout_ms / 1000.0,
        )
        manager = ModelManager(engine, settings)
        manager.last_error = model_error
        app.state.engine = engine
        app.state.settings = settings
        app.state.model_manager = manager
        app.state.realtime = engine.realtime = build_realtime(client, engine, settings)
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(_replay_loop(engine, stop), name="spool-replay"),
            asyncio.create_task(manager.poll(stop), name="model-poll"),
        ]
        if settings.scheduler_poll_s > 0 and app.state.realtime.scheduler is not None:
            tasks.append(
                asyncio.create_task(
                    app.state.realtime.scheduler.run(settings.scheduler_poll_s, stop),
                    name="scheduler",
                )
            )
        try:
            yield
        finally:
            await stop_tasks(tasks, stop)
            with contextlib.suppress(Exception):
                await _replay_once(engine)
            await store.close()

    app = Litestar(
        route_handlers=[DecisionController, OpsController, AdminController, EventsController],
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
            Unavailable: _unavailable_handler,
            Exception: _internal_handler,
        },
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(title="nextbest", version="0.1.0", path="/schema"),
        debug=False,
    )
    tighten_openapi(app, policy)
    return app


async def _replay_once(engine: DecisionEngine) -> int:
    store = engine.store

    async def send(kind: str, id_: str, payload: bytes, extra: bytes | None) -> bool:
        if kind == "decision":
            await store.append_decision(id_, payload, extra)  # idempotent by decision id
            return True
        event = (extra or b"").decode()
        at = float(_decode_payload.decode(payload).get("ts", time.time()))
        if kind == "effects":  # an accepted outcome whose consequences were not applied yet
            return await engine.apply_feedback_effects(id_, event, at)
        status = await store.append_feedback(id_, event, payload)  # idempotent
        if status == 1 and event in EFFECT_EVENTS:
            await engine.apply_feedback_effects(id_, event, at)
        return bool(status != 0)  # 0: no such decision (yet)

    result = await engine.spool.replay(send)
    if result.dropped:  # accepted while Redis was down, but their decision never appeared
        engine.metrics.feedback.labels(event="any", status="dropped_unknown").inc(result.dropped)
        log.warning("dropped %d spooled feedback records for unknown decisions", result.dropped)
    return result.sent


async def _replay_loop(
    engine: DecisionEngine, stop: asyncio.Event | None = None, every_s: float = 1.0
) -> None:
    """Replay the spool and close the breaker as soon as Redis answers again."""
    while not await sleep_or_stop(stop, every_s):
        try:
            if engine.spool.has_pending() or engine.breaker.is_open:
                await asyncio.wait_for(engine.store.ping(), max(engine.timeout * 4, 0.1))
                engine.breaker.success()
                n = await _replay_once(engine)
                if n:
                    log.info("replayed %d spooled log records", n)
        except Exception as exc:
            log.debug("spool replay deferred: %s", type(exc).__name__)
