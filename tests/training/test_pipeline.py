"""The whole training pipeline on the session's small world: train, promote, bundle, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest

from contracts.features import DEFAULT_SPEC
from training.pipeline.dataset import KINDS


def test_train_logs_metrics_and_candidates(trained: Any) -> None:
    from training.pipeline.registry import CANDIDATE, REGISTERED_NAMES, client

    c = client()
    run = c.get_run(trained.run_id)
    assert not run.data.metrics  # the parent: the run's settings, not a model's figures
    assert {"seed", "data.train_start", "data.test_end"} <= set(run.data.params)
    arts = {a.path for a in c.list_artifacts(trained.run_id)}
    assert {"bundle", "evaluation", "timings.json"} <= arts
    assert set(trained.run_ids) == set(KINDS)
    plots: set[str] = set()
    for kind in KINDS:
        child = c.get_run(trained.run_ids[kind])
        assert child.data.tags["mlflow.parentRunId"] == trained.run_id
        assert child.info.run_name == kind
        # each model's run carries its own metrics and parameters, no other model's
        assert f"{kind}.parity_passed" in child.data.metrics
        assert all(k.startswith(f"{kind}.") for k in child.data.metrics), kind
        own = {k for k in child.data.params if k.split(".")[0] in KINDS}
        assert own and all(k.startswith(f"{kind}.") for k in own), kind
        assert len(child.data.params[f"{kind}.dataset_fingerprint"]) == 64
        assert {"bundle", "features", "lightgbm"} <= {
            a.path for a in c.list_artifacts(child.info.run_id)
        }
        names = {Path(a.path).name for a in c.list_artifacts(child.info.run_id, "plots")}
        assert names and all(n.startswith(kind) for n in names), names
        plots |= names
        mv = c.get_model_version_by_alias(REGISTERED_NAMES[kind], CANDIDATE)
        assert mv.run_id == trained.run_ids[kind]
    assert plots == {
        "propensity_reliability.png",
        "propensity_importance.png",
        "send_time_importance.png",
        "send_time_hours.png",
        "channel_importance.png",
    }
    r = trained.results["propensity"]
    assert 0.5 < r.metrics["auc"] <= 1.0
    assert math.isfinite(r.metrics["ece"])
    assert r.plots["reliability"].exists()
    # the model picks better offers than the popularity baseline (ground truth)
    base = r.baselines["most_popular_offer"]["regret_conversion"]
    assert r.metrics["regret_conversion"] < base


def test_model_versions_describe_themselves(trained: Any) -> None:
    """Description (what, data window, headline vs best baseline) and feature tags."""
    from training.pipeline.registry import GATES, REGISTERED_NAMES, client
    from training.pipeline.train import FEATURES

    c = client()
    window = trained.dataset.window
    for kind in KINDS:
        mv = c.get_model_version(REGISTERED_NAMES[kind], trained.versions[kind])
        headline = GATES[kind][0].metric
        value = trained.results[kind].metrics[headline]
        assert mv.description.startswith(f"{kind}: ")
        assert window["train_start"] in mv.description and window["test_end"] in mv.description
        assert f"Headline: {headline} {value:.4f} vs best baseline " in mv.description
        assert mv.tags["features"].split(",") == FEATURES[kind]
        assert mv.tags["features.count"] == str(len(FEATURES[kind]))
        assert len(mv.tags["features.sha256"]) == 64
        assert mv.tags["train_run"] == trained.run_id
        # the service's MLflow loader reads the manifest from the version's own run
        manifest = json.loads(
            Path(c.download_artifacts(mv.run_id, "bundle/manifest.json")).read_text()
        )
        assert manifest["models"][kind]["version"] == trained.versions[kind]


def test_champion_is_scored_on_the_candidates_test_rows(trained: Any) -> None:
    """``train`` scores the champion on the candidate's own held-out rows for the promotion
    gates. The session's run found no champion and says so; this run's own versions, made
    champion, score on its rows as the run measured them (same model as ONNX, same rows,
    the same metric code); a champion needing a feature the rows lack is skipped, saying why."""
    from training.pipeline.registry import CHAMPION, CHAMPION_TOLERANCE, REGISTERED_NAMES, client
    from training.pipeline.train import champion_same_rows

    c = client()
    for kind, name in REGISTERED_NAMES.items():
        tags = c.get_run(trained.run_ids[kind]).data.tags
        assert tags["champion_same_rows.skipped"] == f"{name} has no 'champion' yet"
        assert "champion_same_rows.version" not in tags
        c.set_registered_model_alias(name, CHAMPION, trained.versions[kind])
        same = champion_same_rows(c, trained.dataset, kind)
        assert same.tags["champion_same_rows.version"] == trained.versions[kind]
        own = trained.results[kind].metrics
        for metric in CHAMPION_TOLERANCE[kind]:
            assert same.metrics[metric] == pytest.approx(own[metric], abs=1e-4), (kind, metric)
        assert "test_rows" not in same.metrics and "ope_snips_value" not in same.metrics
        version = trained.versions[kind]
        features = c.get_model_version(name, version).tags["features"]
        c.set_model_version_tag(name, version, "features", features + ",no_such_feature")
        try:
            skipped = champion_same_rows(c, trained.dataset, kind)
        finally:
            c.set_model_version_tag(name, version, "features", features)
        assert skipped.metrics == {}
        assert skipped.tags["champion_same_rows.skipped"] == (
            f"champion v{version} needs features the candidate's test rows lack: no_such_feature"
        )


def test_a_scorer_reads_its_own_columns() -> None:
    """The champion's own feature order, picked from the candidate's matrix."""
    from training.pipeline.evaluate import Scorer, _predict

    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    scorer = Scorer(lambda m: m[:, 0].astype(np.float64) * 10 + m[:, 1], np.asarray([2, 0]))
    assert _predict(scorer, x).tolist() == [20.0, 53.0, 86.0, 119.0]


def test_promote_and_export_bundle(trained: Any, tmp_path: Path) -> None:
    from training.pipeline.bundle import export_bundle
    from training.pipeline.registry import CHAMPION, REGISTERED_NAMES, client

    c = client()
    # gates may refuse some candidates on a tiny world; bundle needs a champion for each
    for kind, name in REGISTERED_NAMES.items():
        c.set_registered_model_alias(name, CHAMPION, trained.versions[kind])
    manifest = export_bundle(tmp_path)
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk["models"].keys() == {"propensity", "send_time", "channel"}
    assert on_disk["models"]["propensity"]["features"] == list(DEFAULT_SPEC.propensity_features)
    assert on_disk["models"]["send_time"]["features"] == list(DEFAULT_SPEC.send_time_features)
    assert on_disk["models"]["channel"]["features"] == list(DEFAULT_SPEC.channel_features)
    assert set(on_disk["data_window"]) == {"train_start", "train_end", "test_start", "test_end"}
    assert len(on_disk["priors"]["hour_open_rate"]) == 24
    assert len(on_disk["offers"]) == 20
    for kind in KINDS:
        m = manifest["models"][kind]
        assert m["alias"] == "champion"
        assert (tmp_path / m["file"]).exists()
        # the same model as LightGBM text (the benchmark's baseline scores with it)
        assert m["lgbm_file"] == f"{kind}.lgbm.txt"
        booster = lgb.Booster(model_file=str(tmp_path / m["lgbm_file"]))
        p = booster.predict(np.asarray(m["input_example"], dtype=np.float32))
        assert np.max(np.abs(p - np.asarray(m["expected_output"]))) <= 1e-5
        assert booster.num_trees() == trained.models[kind].booster_.best_iteration or (
            booster.num_trees() == trained.models[kind].booster_.num_trees()
        )


def test_service_loads_the_bundle(trained: Any, tmp_path: Path) -> None:
    """The decision service's own loader accepts the bundle (feature order, sha, parity)."""
    from service.adapters.models import load_bundle
    from training.pipeline.bundle import export_bundle
    from training.pipeline.registry import CHAMPION, REGISTERED_NAMES, client

    c = client()
    for kind, name in REGISTERED_NAMES.items():
        c.set_registered_model_alias(name, CHAMPION, trained.versions[kind])
    export_bundle(tmp_path)
    ms = load_bundle(tmp_path)
    ex = np.asarray(trained.manifest["models"]["channel"]["input_example"], dtype=np.float32)
    assert ms.channel(ex).shape == (len(ex),)


@pytest.mark.slow
def test_cli_promote_and_bank_without_shared_data(trained: Any, tmp_path: Path) -> None:
    from training.cli import main

    assert main(["promote"]) == 0
    assert main(["bank", "--path", str(tmp_path / "missing.csv")]) == 1
