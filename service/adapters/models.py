"""The three ONNX models and the bundle manifest that travels with them.

Sources: the ``models/`` bundle (manifest.json + *.onnx), or the MLflow registry
(``models:/<name>@champion``) when MLFLOW_TRACKING_URI is set. Loading validates before
anything serves: feature order equals the shared definition, and the stored input example
scores to the stored output (parity).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from contracts.features import FeatureSpec, feature_spec
from contracts.models import KINDS, PARITY_TOLERANCE, REGISTERED_NAMES
from contracts.settings import Settings
from contracts.vocabulary import DEFAULT_VOCABULARY, Vocabulary
from service.domain.decision import Offer, Priors

__all__ = [
    "ModelError",
    "ModelSet",
    "bundle_fingerprint",
    "load_bundle",
    "load_mlflow_champions",
    "load_models",
]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


class ModelError(RuntimeError):
    """A model set that must not serve (missing file, wrong features, failed parity)."""


def _session(model_bytes: bytes) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # One thread per session and no spinning: on a 2-core box the default pools spin and
    # cost more at p99 than they save.
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return ort.InferenceSession(model_bytes, sess_options=opts, providers=["CPUExecutionProvider"])


@dataclass
class _Model:
    name: str
    version: str
    session: Any
    input_name: str
    output_name: str

    def score(self, x: F32) -> F64:
        out = self.session.run([self.output_name], {self.input_name: x})[0]
        p: F64 = np.asarray(out[:, 1], dtype=np.float64)
        return p


@dataclass
class ModelSet:
    """Three scored models + catalogue + priors; immutable once loaded (swap the whole set)."""

    models: dict[str, _Model]
    offers: dict[str, Offer]
    priors: Priors
    manifest: dict[str, Any]
    source: str
    #: the feature names (vocabulary) the models were trained with
    spec: FeatureSpec = dataclasses.field(default_factory=feature_spec)

    def propensity(self, x: F32) -> F64:
        return self.models["propensity"].score(x)

    def send_time(self, x: F32) -> F64:
        return self.models["send_time"].score(x)

    def channel(self, x: F32) -> F64:
        return self.models["channel"].score(x)

    @property
    def versions(self) -> dict[str, str]:
        return {m.name: m.version for m in self.models.values()}

    @property
    def registered_versions(self) -> dict[str, tuple[str, str]]:
        """kind -> (registered name, version)."""
        return {kind: (m.name, m.version) for kind, m in self.models.items()}

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "created_at": self.manifest.get("created_at"),
            "data_window": self.manifest.get("data_window"),
            "models": {
                kind: {
                    "registered_name": m.name,
                    "version": m.version,
                    "alias": self.manifest["models"][kind].get("alias", "champion"),
                    "metrics": self.manifest["models"][kind].get("metrics", {}),
                }
                for kind, m in self.models.items()
            },
        }

    def warm_up(self) -> None:
        for kind, m in self.models.items():
            m.score(np.zeros((4, len(self.spec.model_features[kind])), dtype=np.float32))


def _epoch(value: str | float) -> float:
    if isinstance(value, int | float):
        return float(value)
    return datetime.fromisoformat(value).timestamp()


def _vocabulary(manifest: dict[str, Any], source: str) -> Vocabulary:
    raw = manifest.get("vocabulary")
    if raw is None:  # bundles written before the vocabulary was recorded
        return DEFAULT_VOCABULARY
    try:
        return msgspec.convert(raw, Vocabulary)
    except (msgspec.ValidationError, ValueError) as exc:
        raise ModelError(f"{source}: invalid vocabulary in the manifest: {exc}") from exc


def _build(manifest: dict[str, Any], blobs: dict[str, bytes], source: str) -> ModelSet:
    spec = feature_spec(_vocabulary(manifest, source))
    models: dict[str, _Model] = {}
    for kind in KINDS:
        meta = manifest["models"].get(kind)
        if meta is None:
            raise ModelError(f"{source}: manifest has no {kind} model")
        if tuple(meta["features"]) != spec.model_features[kind]:
            raise ModelError(
                f"{source}: {kind} feature order differs from the contract of its vocabulary "
                "(contracts/features.py)"
            )
        missing = [k for k in ("sha256", "input_example", "expected_output") if not meta.get(k)]
        if missing:  # nothing to validate against: refuse rather than serve unchecked
            raise ModelError(f"{source}: {kind} manifest lacks {', '.join(missing)}")
        blob = blobs[kind]
        sha = meta["sha256"]
        if hashlib.sha256(blob).hexdigest() != sha:
            raise ModelError(f"{source}: {kind} file does not match its sha256")
        try:
            sess = _session(blob)
        except Exception as exc:
            raise ModelError(f"{source}: {kind} is not a loadable ONNX model: {exc}") from exc
        inputs = sess.get_inputs()
        outs = [o.name for o in sess.get_outputs()]
        out_name = "probabilities" if "probabilities" in outs else outs[-1]
        model = _Model(
            meta["registered_name"], str(meta["version"]), sess, inputs[0].name, out_name
        )
        got = model.score(np.asarray(meta["input_example"], dtype=np.float32))
        diff = float(np.max(np.abs(got - np.asarray(meta["expected_output"], dtype=np.float64))))
        if not diff <= PARITY_TOLERANCE:
            raise ModelError(f"{source}: {kind} parity check failed (max diff {diff:.2e})")
        models[kind] = model
    unknown = sorted({str(o["category"]) for o in manifest["offers"]} - set(spec.categories))
    if unknown:
        raise ModelError(f"{source}: offers in categories outside the vocabulary: {unknown}")
    offers = {
        o["offer_id"]: Offer(
            offer_id=o["offer_id"],
            name=o["name"],
            category=o["category"],
            category_idx=spec.categories.index(o["category"]),
            price=float(o["price"]),
            margin=float(o["margin"]),
            valid_from=_epoch(o["valid_from"]),
            valid_to=_epoch(o["valid_to"]),
        )
        for o in manifest["offers"]
    }
    p = manifest["priors"]
    priors = Priors(
        hour_open_rate=[float(x) for x in p["hour_open_rate"]],
        best_hour=int(p["best_hour"]),
        channel_open_rate={k: float(v) for k, v in p["channel_open_rate"].items()},
        channel_order=list(p["channel_order"]),
        offer_conversion_rate={k: float(v) for k, v in p["offer_conversion_rate"].items()},
        offer_order=list(p["offer_order"]),
    )
    return ModelSet(models, offers, priors, manifest, source, spec)


def load_bundle(path: Path) -> ModelSet:
    """The bundle in folder ``path``. Messages and ``source`` name the bundle, never the
    folder: they are served (``/models``, ``/ready``) to callers without a key."""
    manifest_file = path / "manifest.json"
    if not manifest_file.exists():
        raise ModelError("no model bundle in NEXTBEST_MODELS_DIR (run `python -m training all`)")
    manifest = json.loads(manifest_file.read_text())
    blobs = {}
    for kind in KINDS:
        f = path / manifest["models"][kind]["file"]
        if not f.exists():
            raise ModelError(f"bundle: missing {f.name}")
        blobs[kind] = f.read_bytes()
    return _build(manifest, blobs, "bundle")


def bundle_fingerprint(path: Path) -> str:
    """Changes whenever the bundle's manifest changes (used to detect a new bundle)."""
    f = path / "manifest.json"
    return hashlib.sha256(f.read_bytes()).hexdigest() if f.exists() else ""


def load_mlflow_champions(alias: str = "champion") -> ModelSet:
    """Models from the MLflow registry by alias (``models:/<name>@<alias>``).

    Each model version comes with the ``bundle/manifest.json`` its training run logged: its
    own entry there (feature order, stored input example and expected output) validates it,
    whichever run each champion came from. Catalogue and priors come from the propensity
    champion's run. The checksum is taken from the downloaded file (the registry's artifact
    store is the source of truth); the parity check on the stored example is what proves
    the model is the one that was evaluated.
    """
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    blobs: dict[str, bytes] = {}
    entries: dict[str, dict[str, Any]] = {}
    base: dict[str, Any] | None = None
    for kind, name in REGISTERED_NAMES.items():
        try:
            mv = client.get_model_version_by_alias(name, alias)
        except Exception as exc:
            raise ModelError(f"mlflow: {name} has no '{alias}' version ({exc})") from exc
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}@{alias}"))
        onnx_files = sorted(local.rglob("*.onnx"))
        if not onnx_files:
            raise ModelError(f"mlflow {name}@{alias}: no .onnx file in the logged model")
        blob = onnx_files[0].read_bytes()
        if not mv.run_id:
            raise ModelError(f"mlflow {name} v{mv.version}: no training run recorded")
        try:
            run_manifest = json.loads(
                Path(client.download_artifacts(mv.run_id, "bundle/manifest.json")).read_text()
            )
        except Exception as exc:
            raise ModelError(
                f"mlflow {name} v{mv.version}: its run has no bundle/manifest.json"
            ) from exc
        entry = dict(run_manifest["models"][kind])
        entry.update(
            version=str(mv.version),
            alias=alias,
            sha256=hashlib.sha256(blob).hexdigest(),
            run_id=mv.run_id,
        )
        entries[kind] = entry
        blobs[kind] = blob
        if kind == "propensity":
            base = run_manifest
    assert base is not None
    manifest = {**base, "models": entries}
    return _build(manifest, blobs, f"mlflow:{alias}")


def load_models(settings: Settings) -> ModelSet:
    """The configured model set: the registry's alias when MLflow is configured, else the
    bundle folder."""
    if settings.models.mlflow_tracking_uri:
        return load_mlflow_champions(settings.models.alias)
    return load_bundle(settings.models.models_dir)
