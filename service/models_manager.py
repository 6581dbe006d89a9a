"""Model hot swap: load and validate a new model set off the request path, then swap.

The engine reads ``engine.models`` once per request, so replacing the attribute is atomic
for in-flight requests (they finish on the set they started with). A new set is only swapped
in after :func:`service.adapters.models._build` validated it (feature order, sha256, parity
on the stored input example) and it warmed up; a broken one is refused, the old one keeps
serving and the reason shows in logs, ``/models`` and the metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from contracts.models import REGISTERED_NAMES
from contracts.settings import Settings
from service.adapters.models import ModelSet, bundle_fingerprint, load_models
from service.background import sleep_or_stop
from service.engine import DecisionEngine

__all__ = ["ModelManager"]

log = logging.getLogger("nextbest.models")


class ModelManager:
    def __init__(
        self,
        engine: DecisionEngine,
        settings: Settings,
        loader: Callable[[Settings], ModelSet] = load_models,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.loader = loader
        self.last_error: str | None = None
        self.last_check: float | None = None
        #: called with the new model set after each swap (the app re-documents its API)
        self.on_swap: Callable[[ModelSet], None] | None = None
        self._fingerprint = self.fingerprint()
        self._lock = asyncio.Lock()

    def fingerprint(self) -> str:
        """Changes when the champion changes: registry alias versions, or the bundle manifest."""
        if self.settings.models.mlflow_tracking_uri:
            from mlflow import MlflowClient

            client = MlflowClient()
            parts = []
            for name in REGISTERED_NAMES.values():
                mv = client.get_model_version_by_alias(name, self.settings.models.alias)
                parts.append(f"{name}={mv.version}")
            return ",".join(parts)
        return bundle_fingerprint(self.settings.models.models_dir)

    def _load(self) -> ModelSet:
        models = self.loader(self.settings)
        models.warm_up()
        return models

    async def reload(self, reason: str) -> dict[str, Any]:
        async with self._lock:
            old = self.engine.models
            try:
                fp = await asyncio.to_thread(self.fingerprint)
                new = await asyncio.to_thread(self._load)
            except Exception as exc:
                self.last_error = f"refused new models ({reason}): {exc}"
                log.error(self.last_error)
                self.engine.metrics.model_swaps.labels(result="refused").inc()
                return {
                    "swapped": False,
                    "error": self.last_error,
                    "serving": old.versions if old else None,
                }
            self.engine.models = new
            self._fingerprint = fp
            if self.on_swap is not None:
                self.on_swap(new)
            self.last_error = None
            self.engine.metrics.model_swaps.labels(result="swapped").inc()
            self.engine.metrics.serving(new.registered_versions, new.source)
            log.info("models swapped (%s): %s", reason, new.versions)
            return {"swapped": True, "error": None, "serving": new.versions}

    async def poll(self, stop: asyncio.Event | None = None) -> None:
        every = self.settings.models.poll_s
        if every <= 0:
            return
        while not await sleep_or_stop(stop, every):
            self.last_check = time.time()
            try:
                fp = await asyncio.to_thread(self.fingerprint)
            except Exception as exc:
                log.warning("model check failed: %s", exc)
                continue
            if fp != self._fingerprint or self.engine.models is None:
                await self.reload(reason="poll")
