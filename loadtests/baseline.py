"""The baseline the benchmark compares against: the same decision, assembled from parts.

What a team would build in an afternoon: per request, the **Feast SDK**
(``FeatureStore.get_online_features``, Redis online store) for the customer's features and
**LightGBM** (``Booster.predict`` on the model's text file) for the three scores, around the
*same* policy code, contact caps, decision log and HTTP app. Only the feature read and the
scorer differ from the service, so the benchmark's ratio isolates what the service's hot path
(direct Feast-layout read in one pipelined round trip, ONNX sessions) buys.

Deliberately straightforward, not sabotaged: the Feast call is the SDK's synchronous one,
made inside the handler (as a plain web handler would); LightGBM predicts with one thread
(its OpenMP default would fight the server workers for the 2 cores); contacts and purchases
are two plain Redis calls.

Served exactly like the service (``python -m loadtests.baseline``: same uvicorn settings,
same NEXTBEST_* variables; needs the ``<kind>.lgbm.txt`` files that ``export-bundle`` writes
into the bundle, and the features materialized into the Redis online store).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from litestar import Litestar

from service.adapters.models import KINDS, ModelSet
from service.adapters.redis_store import (
    CustomerState,
    ExtraRead,
    RedisStore,
    contacts_key,
    purchased_key,
)
from service.app import create_app
from service.features.vectors import RAW_FEATURES
from service.settings import Settings

__all__ = ["BaselineError", "FeastSdkStore", "LightGBMModels", "baseline_models", "create_app"]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


class BaselineError(RuntimeError):
    """The baseline cannot be assembled (no LightGBM files in the bundle, ...)."""


class FeastSdkStore(RedisStore):
    """RedisStore whose feature read is ``FeatureStore.get_online_features`` (sync SDK)."""

    def __init__(self, base: RedisStore, feature_store: Any) -> None:
        super().__init__(base.client, base.layout, base.policy, base.log_maxlen, base.record_ttl_s)
        self.feast = feature_store
        self.refs = [f"{view}:{f}" for view, feats in RAW_FEATURES.items() for f in feats]
        self.names = [f for feats in RAW_FEATURES.values() for f in feats]

    def _features(self, unit: str) -> dict[str, F64] | None:
        row = self.feast.get_online_features(
            features=self.refs, entity_rows=[{"customer_id": unit}]
        ).to_dict()
        values = {n: row[n][0] for n in self.names}
        if all(v is None for v in values.values()):
            return None
        return {n: np.array([np.nan if v is None else float(v)]) for n, v in values.items()}

    async def read_customer(
        self, unit: str, now: float, with_features: bool = True, extra: ExtraRead | None = None
    ) -> CustomerState:
        rt = None
        if extra is not None:  # the real-time row: its own round trip, as a plain read does
            async with self.client.pipeline(transaction=False) as pipe:
                extra.queue(pipe, unit)
                rt = extra.parse(await pipe.execute())
        features = self._features(unit) if with_features else None
        rows = await self.client.zrangebyscore(contacts_key(unit), now - self.window_s, "+inf")
        bought = await self.client.smembers(purchased_key(unit))  # type: ignore[misc]
        contacts = []
        for m in rows:
            ts_s, ch, _ = m.decode().split("|", 2)
            contacts.append((float(ts_s), ch))
        return CustomerState(features, None, contacts, frozenset(x.decode() for x in bought), rt)


@dataclasses.dataclass
class LightGBMModels(ModelSet):
    """The service's model set (catalogue, priors, versions) scored by LightGBM boosters."""

    boosters: dict[str, Any] = dataclasses.field(default_factory=dict)

    def _predict(self, kind: str, x: F32) -> F64:
        p: F64 = np.asarray(self.boosters[kind].predict(x, num_threads=1), dtype=np.float64)
        return p

    def propensity(self, x: F32) -> F64:
        return self._predict("propensity", x)

    def send_time(self, x: F32) -> F64:
        return self._predict("send_time", x)

    def channel(self, x: F32) -> F64:
        return self._predict("channel", x)


def baseline_models(models: ModelSet, bundle: Path) -> LightGBMModels:
    import lightgbm as lgb

    boosters = {}
    for kind in KINDS:
        name = models.manifest["models"][kind].get("lgbm_file", f"{kind}.lgbm.txt")
        path = bundle / name
        if not path.exists():
            raise BaselineError(
                f"no LightGBM model {path}: re-run `python -m training all` (or `make demo`), "
                "whose export-bundle writes <kind>.lgbm.txt next to the ONNX files"
            )
        boosters[kind] = lgb.Booster(model_file=str(path))
    fields = {f.name: getattr(models, f.name) for f in dataclasses.fields(ModelSet)}
    return LightGBMModels(**fields, boosters=boosters)


def feast_store(settings: Settings) -> Any:
    from training.pipeline.featurestore import feature_store

    return feature_store("redis", settings.redis_url)


def create_baseline_app(settings: Settings | None = None) -> Litestar:
    """The service's app with the Feast SDK feature read and LightGBM scoring swapped in."""
    settings = settings or Settings.from_env()
    app = create_app(settings)

    async def swap(app: Litestar) -> None:
        engine = app.state.engine
        if engine.models is None:
            raise BaselineError("the service's models did not load")
        engine.models = baseline_models(engine.models, settings.models_dir)
        engine.store = FeastSdkStore(engine.store, feast_store(settings))

    app.on_startup.append(swap)
    return app


def main() -> None:
    from service.__main__ import serve

    serve("loadtests.baseline:create_baseline_app")


if __name__ == "__main__":
    main()
