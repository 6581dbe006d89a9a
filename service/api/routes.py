"""Thin controllers for /decide, /feedback and the operational endpoints."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from litestar import Controller, Response, get, post
from litestar.datastructures import State
from litestar.params import JSONBody
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.adapters.redis_store import log_backlog
from service.api.body import read_body
from service.engine import DecisionEngine
from service.models_manager import ModelManager
from service.schemas import (
    BatchRequest,
    BatchResponse,
    DecideRequest,
    DecideResponse,
    FeedbackRequest,
    FeedbackResponse,
    Readiness,
)
from service.security import admin_guard, api_guard

__all__ = ["AdminController", "DecisionController", "OpsController"]

log = logging.getLogger("nextbest.api")


def _engine(state: State) -> DecisionEngine:
    engine: DecisionEngine = state.engine
    return engine


class DecisionController(Controller):
    tags = ["decisions"]  # noqa: RUF012
    guards = [api_guard]  # noqa: RUF012
    before_request = staticmethod(read_body)

    @post("/decide", status_code=200, summary="Decide the next best action for one customer")
    async def decide(self, data: JSONBody[DecideRequest], state: State) -> DecideResponse:
        return await _engine(state).decide(data)

    @post("/decide/batch", status_code=200, summary="Decide for up to 1,000 customers")
    async def decide_batch(self, data: JSONBody[BatchRequest], state: State) -> BatchResponse:
        return BatchResponse(decisions=await _engine(state).decide_batch(data.requests))

    @post("/feedback", status_code=200, summary="Report an outcome of a decision")
    async def feedback(self, data: JSONBody[FeedbackRequest], state: State) -> FeedbackResponse:
        return await _engine(state).feedback(data)


class OpsController(Controller):
    tags = ["operations"]  # noqa: RUF012

    @get("/health", summary="Liveness: the process answers")
    async def health(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/ready", summary="Readiness: Redis reachable and models loaded")
    async def ready(self, state: State) -> Response[Readiness]:
        engine = _engine(state)
        problems: list[str] = []
        try:
            await engine.store.ping()
        except Exception as exc:
            problems.append(f"redis unreachable: {type(exc).__name__}")
        else:
            limit = state.settings.redis.log_backlog_max
            try:
                backlog, age = await asyncio.wait_for(log_backlog(engine.store.client), 2.0)
            except Exception as exc:
                backlog, age = 0, 0.0
                log.warning("log backlog not checked: %s", type(exc).__name__)
            if limit and backlog > limit:
                # Redis fills with the log: at noeviction it then refuses writes (spooled)
                problems.append(
                    f"decision log backlog: {backlog:,} entries not exported (oldest "
                    f"{age:,.0f} s) > NEXTBEST_LOG_BACKLOG_MAX={limit:,}: is the exporter "
                    "(python -m service.exporter) running?"
                )
        if engine.models is None:
            manager: ModelManager = state.model_manager
            problems.append(f"models not loaded: {manager.last_error}")
        body = Readiness(ready=not problems, problems=problems)
        return Response(body, status_code=200 if not problems else 503)

    @get("/models", summary="Loaded models: names, versions, aliases, metrics")
    async def models(self, state: State) -> dict[str, Any]:
        engine = _engine(state)
        loaded = engine.models.describe() if engine.models else None
        manager: ModelManager = state.model_manager
        return {
            "loaded": loaded,
            "last_error": manager.last_error,
            "last_check": manager.last_check,
            "policy_version": engine.policy.version,
        }

    @get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    async def metrics(self, state: State) -> Response[bytes]:
        engine = _engine(state)
        engine.metrics.spool_pending.set(engine.spool.pending())
        engine.metrics.breaker_open.set(1.0 if engine.breaker.is_open else 0.0)
        engine.metrics.breaker_opened.set(engine.breaker.opened)
        return Response(generate_latest(engine.metrics.registry), media_type=CONTENT_TYPE_LATEST)


class AdminController(Controller):
    path = "/admin"
    tags = ["admin"]  # noqa: RUF012
    guards = [admin_guard]  # noqa: RUF012

    @post("/models/reload", status_code=200, summary="Load the current champion models now")
    async def reload_models(self, state: State) -> dict[str, Any]:
        manager: ModelManager = state.model_manager
        return await manager.reload(reason="admin")
