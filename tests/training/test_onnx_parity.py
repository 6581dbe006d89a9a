"""ONNX parity on the exported models, including inputs sitting exactly on split thresholds."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from training.pipeline.dataset import KINDS
from training.pipeline.onnx_export import (
    PARITY_TOLERANCE,
    check_parity,
    onnx_session,
    score_onnx,
    to_onnx,
)
from training.pipeline.train import FEATURES


def test_parity_on_all_held_out_rows(trained: Any) -> None:
    for kind in KINDS:
        d = trained.dataset.models[kind]
        model = trained.models[kind]
        x = d.x[d.test]
        assert np.isnan(x).any(), "held-out rows should include missing values"
        res = check_parity(model, to_onnx(model, len(FEATURES[kind])), x, rows=len(x))
        assert res.rows == len(x)
        assert res.passed and res.max_abs_diff <= PARITY_TOLERANCE, (kind, res)


def test_parity_at_split_thresholds(trained: Any) -> None:
    """Inputs equal to float32(threshold): the float32 rounding pitfall of tree ensembles."""
    kind = "propensity"
    model = trained.models[kind]
    d = trained.dataset.models[kind]
    x = d.x[d.test][:2000].copy()
    dump = model.booster_.dump_model()
    splits: list[tuple[int, float]] = []

    def walk(node: dict[str, Any]) -> None:
        # skip LightGBM's zero-threshold (|t| ~ 1e-35) and "infinite" (1e300) splits: inputs
        # there are not realistic (LightGBM itself reads |x| <= 1e-35 as zero)
        if "split_index" in node and 1e-30 < abs(float(node["threshold"])) < 1e30:
            splits.append((int(node["split_feature"]), float(node["threshold"])))
        if "split_index" in node:
            walk(node["left_child"])
            walk(node["right_child"])

    for tree in dump["tree_info"]:
        walk(tree["tree_structure"])
    rng = np.random.default_rng(0)
    for i in range(len(x)):
        f, t = splits[rng.integers(len(splits))]
        x[i, f] = np.float32(t)
    onx = to_onnx(model, len(FEATURES[kind]))
    assert check_parity(model, onx, x, rows=len(x)).passed


def test_onnx_contract(trained: Any) -> None:
    for kind in KINDS:
        onx = to_onnx(trained.models[kind], len(FEATURES[kind]))
        onnx.checker.check_model(onx)
        sess = onnx_session(onx)
        (inp,) = sess.get_inputs()
        assert inp.name == "input"
        assert "probabilities" in [o.name for o in sess.get_outputs()]
        m = trained.manifest["models"][kind]
        got = score_onnx(sess, np.asarray(m["input_example"], dtype=np.float32))
        assert np.max(np.abs(got - np.asarray(m["expected_output"]))) <= PARITY_TOLERANCE
        out = sess.run(["probabilities"], {"input": np.asarray(m["input_example"], np.float32)})
        assert out[0].shape == (len(m["input_example"]), 2)
