"""The application factory, ``create_app(settings)``: the service's one composition root.

Resources open and close in the lifespan. Adapters are parameters with production defaults,
so a test or the benchmark's baseline passes another feature reader or model loader instead
of patching attributes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import redis.asyncio as aioredis
from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from contracts.feast_repo import FEAST_VERSION, canary_values
from contracts.features import DEFAULT_SPEC, FeatureSpec
from contracts.settings import Settings
from service.adapters.feast_redis import canary_problems
from service.adapters.feast_sdk import FeastSdkFeatures
from service.adapters.models import ModelSet, load_models
from service.adapters.redis_store import RedisStore, memory_policy
from service.adapters.spool import Spool
from service.api.body import ApiRequest
from service.api.errors import EXCEPTION_HANDLERS
from service.api.openapi import document_api
from service.api.routes import AdminController, DecisionController, OpsController
from service.background import stop_tasks
from service.domain.config import load_policy
from service.engine import DecisionEngine, FeatureReader
from service.engine.replay import replay_loop, replay_once
from service.models_manager import ModelManager
from service.observability import Metrics, RequestMetricsMiddleware, configure_logging
from service.realtime.routes import EventsController
from service.realtime.service import build_realtime
from service.security import Limits, keyring_from_settings

__all__ = ["FeatureReaderFactory", "ModelLoader", "create_app", "redis_client"]

log = logging.getLogger("nextbest.app")

#: settings -> the model set to serve (raises when none can be loaded)
ModelLoader = Callable[[Settings], ModelSet]
#: settings -> a feature reader (None: features ride in the Redis state read)
FeatureReaderFactory = Callable[[Settings], FeatureReader | None]


def redis_client(settings: Settings) -> Any:
    """A pooled asyncio client (or cluster client); retries with backoff, bounded timeouts."""
    timeout = max(settings.redis.timeout_ms / 1000.0 * 4, 0.1)
    common: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(ExponentialBackoff(cap=0.05, base=0.005), retries=1),
    }
    if settings.redis.cluster:
        return aioredis.RedisCluster.from_url(settings.redis.url, **common)
    return aioredis.Redis.from_url(
        settings.redis.url, health_check_interval=10, max_connections=256, **common
    )


def feature_reader(settings: Settings) -> FeatureReader | None:
    """The Feast SDK reader when NEXTBEST_FEATURE_SOURCE=feast (None: the direct Redis read).

    The store is opened the way the offline tools open it (:mod:`contracts.feast_repo`: the
    repository's feature_store*.yaml for NEXTBEST_ONLINE_STORE, registry under
    NEXTBEST_VAR_DIR), so both sides always read the same repository.
    """
    if settings.features.source != "feast":
        return None
    from contracts.feast_repo import feature_store

    return FeastSdkFeatures(feature_store(settings=settings))


async def _check_feast_layout(store: RedisStore, spec: FeatureSpec = DEFAULT_SPEC) -> None:
    """Read the layout canary that ``feature-store`` writes through the Feast SDK with this
    service's own decoder (the feature names of the models' vocabulary): a difference stops
    the start (loudly); no canary (nothing materialized yet) or no Redis (the service starts
    degraded) only logs."""
    try:
        values = await asyncio.wait_for(store.read_canary(spec), 5.0)
    except Exception as exc:
        log.warning("Feast layout not checked (Redis: %s)", type(exc).__name__)
        return
    problems = canary_problems(values, canary_values(spec))
    if problems is None:
        log.warning("Feast layout not checked: no canary row (run `python -m training "
                    "feature-store`)")  # fmt: skip
    elif problems:
        raise RuntimeError(
            f"Feast's Redis layout is not the one this service reads (Feast {FEAST_VERSION}.x "
            f"expected): {'; '.join(problems[:5])}"
        )


async def _check_memory_policy(client: Any) -> None:
    """Refuse a Redis that evicts keys (:func:`memory_policy` raises); an unreachable Redis
    or a disabled CONFIG command only logs (the service starts degraded / trusts the setup)."""
    try:
        policy = await asyncio.wait_for(memory_policy(client), 5.0)
    except TimeoutError:
        log.warning("Redis maxmemory-policy not checked (timeout)")
        return
    if policy is None:
        log.warning("Redis maxmemory-policy not checked (CONFIG unavailable or Redis down): "
                    "it must be noeviction")  # fmt: skip


def create_app(
    settings: Settings | None = None,
    *,
    model_loader: ModelLoader = load_models,
    features: FeatureReaderFactory = feature_reader,
    metrics: Metrics | None = None,
) -> Litestar:
    settings = settings or Settings.from_env()
    configure_logging(settings.server.log_level)
    metrics = metrics or Metrics()
    keyring = keyring_from_settings(settings)  # refuses to start with no key (unless dev mode)
    policy = load_policy(settings.policy.policy_file)  # a broken policy file stops the start here

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        client = redis_client(settings)
        store = RedisStore(
            client,
            policy.contact_policy,
            project=settings.features.feast_project,
            log_maxlen=settings.redis.log_maxlen,
            record_ttl_s=round(settings.redis.feedback_window_days * 86400),
        )
        await _check_memory_policy(client)  # an evicting Redis stops the start here
        models: ModelSet | None = None
        model_error = None
        try:
            models = await asyncio.to_thread(model_loader, settings)
            models.warm_up()
            metrics.serving(models.registered_versions, models.source)
        except Exception as exc:
            model_error = f"models not loaded: {exc}"
            log.error(model_error)
        # a Feast upgrade that moved the layout stops here
        await _check_feast_layout(store, models.spec if models is not None else DEFAULT_SPEC)
        engine = DecisionEngine(
            models,
            policy,
            store,
            Spool(settings.paths.spool_dir),
            metrics,
            settings.redis.timeout_ms / 1000.0,
            features=await asyncio.to_thread(features, settings),
            feature_timeout_s=settings.features.timeout_ms / 1000.0,
        )
        document_api(app, policy, models)  # offers, channels: the loaded models'
        manager = ModelManager(engine, settings, model_loader)
        manager.on_swap = lambda new: document_api(app, policy, new)
        manager.last_error = model_error
        app.state.engine = engine
        app.state.settings = settings
        app.state.model_manager = manager
        app.state.realtime = engine.realtime = build_realtime(client, engine, settings)
        if settings.server.otel:
            from service.tracing import annotate_span

            engine.on_decision = annotate_span
        if settings.security.rate_limit_store == "redis":  # one budget across workers
            keyring.limits = Limits(
                keyring.rate_per_s,
                keyring.burst,
                keyring.auth_failures_per_min,
                client=client,
                guard=engine.guard.call,
            )
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(replay_loop(engine, stop), name="spool-replay"),
            asyncio.create_task(manager.poll(stop), name="model-poll"),
        ]
        scheduler = app.state.realtime.scheduler
        if settings.policy.scheduler_poll_s > 0 and scheduler is not None:
            tasks.append(
                asyncio.create_task(
                    scheduler.run(settings.policy.scheduler_poll_s, stop), name="scheduler"
                )
            )
        try:
            yield
        finally:
            await stop_tasks(tasks, stop)
            with contextlib.suppress(Exception):
                await replay_once(engine)
            engine.spool.close()
            await store.close()

    origins = settings.server.cors_origins
    middleware: list[Any] = [DefineMiddleware(RequestMetricsMiddleware, metrics=metrics)]
    plugins: list[Any] = []
    on_shutdown: list[Any] = []
    if settings.server.otel:
        from service.tracing import tracing_plugin

        plugin, provider = tracing_plugin()
        plugins.append(plugin)
        on_shutdown.append(provider.shutdown)  # flushes the spans still batched
    app = Litestar(
        route_handlers=[DecisionController, OpsController, AdminController, EventsController],
        state=State({"keyring": keyring}),
        cors_config=(
            CORSConfig(allow_origins=[o.strip() for o in origins.split(",")]) if origins else None
        ),
        lifespan=[lifespan],
        middleware=middleware,
        plugins=plugins,
        on_shutdown=on_shutdown,
        before_send=[RequestMetricsMiddleware.count_unrouted(metrics)],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        request_class=ApiRequest,
        request_max_body_size=settings.server.max_body_bytes,
        openapi_config=OpenAPIConfig(title="nextbest", version="0.1.0", path="/schema"),
        debug=False,
    )
    document_api(app, policy, None)  # complete before the lifespan, too
    return app
