"""The ``export-bundle`` stage: the ``champion`` models + manifest.json into ``models/``.

Each model comes from ``models:/<registered name>@champion``; its manifest entry (feature
order, metrics, input example and expected output) from ``bundle/manifest.json`` of the run
that produced it. Catalogue, priors and data window come from the propensity champion's run.
Before writing, every model must score its stored input example to its stored output
(max |diff| <= 1e-5), the check the service repeats at load.

When the run also logged the model as LightGBM text (``lightgbm/<kind>.txt``), it is copied
as ``<kind>.lgbm.txt`` (same parity check): the benchmark's straightforward baseline scores
with ``lightgbm.Booster.predict``. The service itself only reads the ONNX files.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from training.pipeline.onnx_export import PARITY_TOLERANCE, ParityError, onnx_session, score_onnx
from training.pipeline.registry import CHAMPION, REGISTERED_NAMES, client, version_by_alias

__all__ = ["export_bundle"]


class BundleError(RuntimeError):
    pass


def export_bundle(out: Path, alias: str = CHAMPION) -> dict[str, Any]:
    """Write the ``alias`` versions (default ``champion``) as a bundle into ``out``.

    Another alias (``candidate``) gives a bundle for offline evaluation (e.g. ``ope
    --candidate``) without promoting anything.
    """
    import mlflow

    c = client()
    out.mkdir(parents=True, exist_ok=True)
    models: dict[str, Any] = {}
    blobs: dict[str, bytes] = {}
    texts: dict[str, str] = {}
    base: dict[str, Any] | None = None
    for kind, name in REGISTERED_NAMES.items():
        mv = version_by_alias(c, kind, alias)
        if mv is None:
            raise BundleError(f"{name} has no '{alias}' version: run `promote` first")
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}@{alias}"))
        files = sorted(local.rglob("*.onnx"))
        if not files:
            raise BundleError(f"{name}@{alias}: no .onnx file in the logged model")
        blob = files[0].read_bytes()
        run_manifest: dict[str, Any] = json.loads(
            Path(c.download_artifacts(mv.run_id, "bundle/manifest.json")).read_text()
        )
        if kind == "propensity":
            base = run_manifest
        meta = dict(run_manifest["models"][kind])
        meta.update(
            version=str(mv.version),
            alias=alias,
            file=f"{kind}.onnx",
            sha256=hashlib.sha256(blob).hexdigest(),
            run_id=mv.run_id,
        )
        got = score_onnx(onnx_session(blob), np.asarray(meta["input_example"], dtype=np.float32))
        diff = float(np.max(np.abs(got - np.asarray(meta["expected_output"]))))
        if not diff <= PARITY_TOLERANCE:
            raise ParityError(f"{name}@{alias}: stored example parity {diff:.2e}")
        text = _lightgbm_text(c, mv.run_id, kind)
        if text is not None:
            example = np.asarray(meta["input_example"], dtype=np.float32)
            p_lgb = _score_lightgbm(text, example)
            diff = float(np.max(np.abs(p_lgb - np.asarray(meta["expected_output"]))))
            if not diff <= PARITY_TOLERANCE:
                raise ParityError(f"{name}@{alias}: LightGBM text parity {diff:.2e}")
            meta.update(lgbm_file=f"{kind}.lgbm.txt")
            texts[kind] = text
        models[kind] = meta
        blobs[kind] = blob
    assert base is not None
    manifest = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "data_window": base["data_window"],
        "models": models,
        "offers": base["offers"],
        "priors": base["priors"],
    }
    if "vocabulary" in base:  # the channels and categories the models were trained with
        manifest["vocabulary"] = base["vocabulary"]
    for kind, blob in blobs.items():
        (out / f"{kind}.onnx").write_bytes(blob)
    for kind, text in texts.items():
        (out / f"{kind}.lgbm.txt").write_text(text)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def _lightgbm_text(c: Any, run_id: str, kind: str) -> str | None:
    """The run's ``lightgbm/<kind>.txt`` artifact, or None (runs from before it was logged)."""
    try:
        return Path(c.download_artifacts(run_id, f"lightgbm/{kind}.txt")).read_text()
    except Exception:
        return None


def _score_lightgbm(text: str, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    import lightgbm as lgb

    p: npt.NDArray[np.float64] = np.asarray(
        lgb.Booster(model_str=text).predict(x), dtype=np.float64
    )
    return p
