"""LightGBM -> ONNX (onnxmltools) with a parity check against LightGBM itself.

The graph takes one float32 tensor named ``input`` (n, n_features) and returns the
``probabilities`` tensor (n, 2) (no ZipMap). Tree ensembles in ONNX Runtime compare
float32 inputs with float32 thresholds, while LightGBM keeps double thresholds; a double
threshold rounded to the nearest float32 can flip ``x <= t`` for an input equal to that
float32. We round every threshold *down* to a float32 instead: for float32 ``x``,
``x <= t`` holds exactly when ``x <= float32_floor(t)``, so the ONNX model agrees with
LightGBM on every float32 input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx

__all__ = [
    "PARITY_ROWS",
    "PARITY_TOLERANCE",
    "ParityError",
    "ParityResult",
    "check_parity",
    "onnx_session",
    "score_onnx",
    "to_onnx",
]

PARITY_TOLERANCE = 1e-5
PARITY_ROWS = 10_000
INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"


class ParityError(RuntimeError):
    """ONNX and LightGBM disagree beyond the tolerance: the export fails."""


@dataclass(frozen=True)
class ParityResult:
    rows: int
    max_abs_diff: float
    passed: bool


def _floor_f32(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    with np.errstate(over="ignore"):  # 1e300 ("always left") thresholds become inf
        f = values.astype(np.float32)
    too_big = f.astype(np.float64) > values
    f[too_big] = np.nextafter(f[too_big], np.float32(-np.inf))
    return f


def to_onnx(model: Any, n_features: int) -> onnx.ModelProto:
    """Convert a fitted ``LGBMClassifier`` (probabilities output, no ZipMap)."""
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    onx: onnx.ModelProto = convert_lightgbm(
        model,
        initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
        zipmap=False,
        target_opset=15,
    )
    _round_thresholds_down(onx, model)
    return onx


def _round_thresholds_down(onx: onnx.ModelProto, model: Any) -> None:
    """Floor every split threshold to float32 using the booster's exact double thresholds."""
    dump = model.booster_.dump_model()
    doubles: list[float] = []

    def walk(node: dict[str, Any]) -> None:
        if "split_index" in node:
            doubles.append(float(node["threshold"]))
            walk(node["left_child"])
            walk(node["right_child"])

    for tree in dump["tree_info"]:
        walk(tree["tree_structure"])
    exact = sorted(set(doubles))
    if not exact:
        return
    exact_arr = np.asarray(exact, dtype=np.float64)
    with np.errstate(over="ignore"):
        nearest32 = exact_arr.astype(np.float32)
    floor32 = _floor_f32(exact_arr)
    # map each float32-rounded threshold back to its floor-rounded value
    lookup = dict(zip(nearest32.tolist(), floor32.tolist(), strict=True))
    for node in onx.graph.node:
        if not node.op_type.startswith("TreeEnsemble"):
            continue
        for attr in node.attribute:
            if attr.name == "nodes_values":
                vals = [lookup.get(float(np.float32(v)), v) for v in attr.floats]
                del attr.floats[:]
                attr.floats.extend(vals)


def onnx_session(onx: onnx.ModelProto | bytes) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    blob = onx if isinstance(onx, bytes) else onx.SerializeToString()
    return ort.InferenceSession(blob, sess_options=opts, providers=["CPUExecutionProvider"])


def score_onnx(session: Any, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    out = session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)})[0]
    p: npt.NDArray[np.float64] = np.asarray(out[:, 1], dtype=np.float64)
    return p


def check_parity(
    model: Any,
    onx: onnx.ModelProto,
    x: npt.NDArray[np.float32],
    rows: int = PARITY_ROWS,
    tolerance: float = PARITY_TOLERANCE,
    seed: int = 42,
) -> ParityResult:
    """Max |p_onnx - p_lightgbm| on ``rows`` held-out rows (all if fewer); raises if too big."""
    if len(x) > rows:
        idx = np.sort(np.random.default_rng(seed).choice(len(x), rows, replace=False))
        x = x[idx]
    p_lgb = model.booster_.predict(x)  # P(positive) at the best iteration, like predict_proba
    p_onnx = score_onnx(onnx_session(onx), x)
    diff = float(np.max(np.abs(p_lgb - p_onnx))) if len(x) else 0.0
    result = ParityResult(rows=len(x), max_abs_diff=diff, passed=diff <= tolerance)
    if not result.passed:
        raise ParityError(f"ONNX parity failed: max |diff| {diff:.3e} > {tolerance:.0e}")
    return result
