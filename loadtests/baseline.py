"""The baseline the benchmark compares against: the same decision, assembled from parts.

What a team would build in an afternoon: per request, the **Feast SDK**
(``FeatureStore.get_online_features``, Redis online store) for the customer's features and
**LightGBM** (``Booster.predict`` on the model's text file) for the three scores, around the
*same* policy code, contact caps, decision log and HTTP app: it is built by the service's own
factory (``create_app``) with two adapters injected, a feature reader and a model loader.
Only the feature read and the scorer differ from the service, so the benchmark's ratio
isolates what the service's hot path (direct Feast-layout read in the same pipelined round
trip as the contact history, ONNX sessions) buys.

Deliberately straightforward, not sabotaged: the Feast call is the SDK's synchronous one,
made inside the handler (as a plain web handler would); LightGBM predicts with one thread
(its OpenMP default would fight the server workers for the 2 cores); contacts, purchases and
the real-time row come from the service's own pipelined Redis read.

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

from contracts.features import FeatureSpec
from contracts.models import KINDS
from contracts.settings import Settings
from service.adapters.models import ModelSet, load_models
from service.app import create_app

__all__ = [
    "BaselineError",
    "FeastSdkInHandler",
    "LightGBMModels",
    "baseline_models",
    "create_baseline_app",
]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


class BaselineError(RuntimeError):
    """The baseline cannot be assembled (no LightGBM files in the bundle, ...)."""


class FeastSdkInHandler:
    """Features by ``FeatureStore.get_online_features``, called synchronously in the handler
    (as a plain web handler would), for the engine's feature-reader slot."""

    def __init__(self, feature_store: Any) -> None:
        self.feast = feature_store

    async def read(
        self, customer_id: str, spec: FeatureSpec
    ) -> tuple[dict[str, F64] | None, dict[str, float]]:
        refs = [f"{view}:{f}" for view, feats in spec.raw.items() for f in feats]
        names = [f for feats in spec.raw.values() for f in feats]
        row = self.feast.get_online_features(
            features=refs, entity_rows=[{"customer_id": customer_id}]
        ).to_dict()
        values = {n: row[n][0] for n in names}
        if all(v is None for v in values.values()):
            return None, {}
        return {n: np.array([np.nan if v is None else float(v)]) for n, v in values.items()}, {}


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


def lightgbm_loader(settings: Settings) -> LightGBMModels:
    """The service's model set, scored by the LightGBM text models next to the ONNX files."""
    return baseline_models(load_models(settings), settings.models.models_dir)


def feast_sdk_reader(settings: Settings) -> FeastSdkInHandler:
    from contracts.feast_repo import feature_store

    return FeastSdkInHandler(feature_store("redis", settings.redis.url, settings))


def create_baseline_app(settings: Settings | None = None) -> Litestar:
    """The service's own factory with the Feast SDK feature read and LightGBM scoring."""
    return create_app(settings, model_loader=lightgbm_loader, features=feast_sdk_reader)


def main() -> None:
    from service.__main__ import serve

    serve("loadtests.baseline:create_baseline_app")


if __name__ == "__main__":
    main()
