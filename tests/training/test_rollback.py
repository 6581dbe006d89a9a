"""Promotion history and `rollback` on a real MLflow registry (its own SQLite store).

Versions are registered from runs that log the metrics the gates read (no model training:
promote and rollback only read metrics and move aliases), so each test starts from a known
registry: v1 promoted, then v2 promoted over it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from training.pipeline.registry import (
    CANDIDATE,
    CHAMPION,
    HISTORY_TAG,
    REGISTERED_NAMES,
    client,
    promote,
    rollback,
    setup_mlflow,
)

#: per model: (metric, value the candidate reports, value the baseline reports); each
#: candidate beats its baseline by more than the gate's margin
GOOD = {
    "propensity": {"auc": (0.80, 0.60), "regret_conversion": (0.10, 0.30)},
    "send_time": {"top3_hit_rate": (0.40, 0.20), "regret_open": (0.05, 0.20)},
    "channel": {"logloss": (0.40, 0.50), "regret_open": (0.05, 0.20)},
}


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fresh registry; yields the client. The session's MLflow URI is put back after."""
    import mlflow

    before = mlflow.get_tracking_uri()
    monkeypatch.setenv("NEXTBEST_VAR_DIR", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    try:
        yield client()
    finally:
        mlflow.set_tracking_uri(before)


def register(
    c: Any,
    kind: str,
    worse: bool = False,
    metrics: dict[str, float] | None = None,
    tags: dict[str, str] | None = None,
) -> str:
    """A new version of ``kind`` from a run with passing (or, ``worse``, failing) metrics
    (``metrics``: more, or other values; ``tags``: run tags); it becomes the candidate.
    Returns its version."""
    import mlflow

    setup_mlflow()
    logged = {f"{kind}.parity_passed": 1.0, f"{kind}.parity_max_abs_diff": 1e-7}
    for metric, (value, base) in GOOD[kind].items():
        logged[f"{kind}.{metric}"] = base if worse else value
        logged[f"{kind}.baseline_base.{metric}"] = base
    with mlflow.start_run(run_name=kind) as run:
        mlflow.log_metrics({**logged, **(metrics or {})})
        mlflow.set_tags(tags or {})
        mlflow.log_text("a model", "model/MLmodel")
    name = REGISTERED_NAMES[kind]
    try:
        c.get_registered_model(name)
    except Exception:
        c.create_registered_model(name)
    mv = c.create_model_version(name, f"{run.info.artifact_uri}/model", run.info.run_id)
    c.set_registered_model_alias(name, CANDIDATE, mv.version)
    return str(mv.version)


def champion(c: Any, kind: str) -> str:
    return str(c.get_model_version_by_alias(REGISTERED_NAMES[kind], CHAMPION).version)


def history(c: Any, kind: str) -> list[str]:
    raw = c.get_registered_model(REGISTERED_NAMES[kind]).tags.get(HISTORY_TAG)
    return list(json.loads(raw)) if raw else []


@pytest.fixture
def promoted_twice(registry: Any) -> Any:
    for _ in range(2):
        for kind in REGISTERED_NAMES:
            register(registry, kind)
        rc, decisions = promote(strict=True)
        assert rc == 0, decisions
    return registry


class TestPromotionRecords:
    def test_history_and_version_tags(self, promoted_twice: Any) -> None:
        c = promoted_twice
        for kind, name in REGISTERED_NAMES.items():
            assert champion(c, kind) == "2"
            assert history(c, kind) == ["1", "2"]
            tags = c.get_model_version(name, "2").tags
            assert tags["champion.previous"] == "1"
            assert tags["gates"] == "passed"
            assert tags["gates.champion_version"] == "1"
            gate_tags = {k: v for k, v in tags.items() if k.startswith("gate.")}
            assert "gate.onnx_parity" in gate_tags
            first = next(iter(GOOD[kind]))
            assert gate_tags[f"gate.{first}_vs_best_baseline"].startswith(f"passed: {first} ")
            assert all(v.startswith("passed: ") for v in gate_tags.values()), gate_tags
            assert c.get_model_version(name, "1").tags["champion.previous"] == "none"

    def test_a_refused_candidate_carries_the_failed_gates(self, promoted_twice: Any) -> None:
        c = promoted_twice
        v = register(c, "propensity", worse=True)
        rc, decisions = promote(strict=True)
        assert rc == 1 and decisions["propensity"]
        tags = c.get_model_version(REGISTERED_NAMES["propensity"], v).tags
        assert tags["gates"] == "failed"
        assert tags["gate.auc_vs_best_baseline"].startswith("failed: auc 0.6000 vs best baseline")
        assert tags["gate.onnx_parity"].startswith("passed: ")
        assert champion(c, "propensity") == "2" and history(c, "propensity") == ["1", "2"]


class TestRollback:
    def test_back_to_the_previous_champion_then_refuse(self, promoted_twice: Any) -> None:
        c = promoted_twice
        name = REGISTERED_NAMES["propensity"]
        done = rollback(["propensity"])["propensity"]
        assert (done.from_version, done.to_version, done.reason) == ("2", "1", None)
        assert champion(c, "propensity") == "1"
        assert history(c, "propensity") == ["1"]
        assert "champion.rolled_back_at" in c.get_model_version(name, "2").tags
        # the other models stay where they were
        assert champion(c, "send_time") == "2" and champion(c, "channel") == "2"
        # nothing earlier than v1: refused, champion unchanged
        again = rollback(["propensity"])["propensity"]
        assert again.reason and "no earlier champion" in again.reason
        assert champion(c, "propensity") == "1"
        # the rolled-back version is still the candidate: promote does not bring it back
        rc, decisions = promote(strict=True)
        assert rc == 1 and "rolled back" in decisions["propensity"][0]
        assert champion(c, "propensity") == "1"

    def test_a_new_promotion_after_a_rollback(self, promoted_twice: Any) -> None:
        c = promoted_twice
        rollback(["channel"])
        v3 = register(c, "channel")
        promote()
        assert champion(c, "channel") == v3 == "3"
        assert history(c, "channel") == ["1", "3"]
        assert c.get_model_version(REGISTERED_NAMES["channel"], v3).tags["champion.previous"] == "1"
        rollback(["channel"])
        assert champion(c, "channel") == "1"

    def test_a_champion_moved_by_hand(self, promoted_twice: Any) -> None:
        """Rollback returns to the last champion promote recorded."""
        c = promoted_twice
        name = REGISTERED_NAMES["send_time"]
        v3 = register(c, "send_time")
        c.set_registered_model_alias(name, CHAMPION, v3)  # not through promote
        done = rollback(["send_time"])["send_time"]
        assert (done.from_version, done.to_version) == (v3, "2")
        assert history(c, "send_time") == ["1", "2"]

    def test_no_champion_or_no_history(self, registry: Any) -> None:
        register(registry, "propensity")
        assert "no 'champion'" in (rollback(["propensity"])["propensity"].reason or "")
        registry.set_registered_model_alias(REGISTERED_NAMES["propensity"], CHAMPION, "1")
        assert "no earlier champion" in (rollback(["propensity"])["propensity"].reason or "")

    def test_cli(self, promoted_twice: Any, capsys: pytest.CaptureFixture[str]) -> None:
        from training.cli import main

        c = promoted_twice
        assert main(["rollback", "--model", "send_time"]) == 0
        assert champion(c, "send_time") == "1"
        out = capsys.readouterr().out
        assert "send_time   v2 -> v1" in out
        # all: send_time has nothing earlier (refused, exit 1), the others step back
        assert main(["rollback"]) == 1
        out = capsys.readouterr().out
        assert "send_time   refused: no earlier champion" in out
        assert "propensity  v2 -> v1" in out and "channel     v2 -> v1" in out
        assert {champion(c, k) for k in REGISTERED_NAMES} == {"1"}


class TestChampionOnTheSameRows:
    """``promote`` reads the champion's figures on the candidate's rows from the candidate's
    run (``train`` logs them) when they are of the current champion."""

    @pytest.fixture
    def champion_v1(self, registry: Any) -> Any:
        """v1 of propensity is champion; it logged AUC 0.90 on its own test rows."""
        register(registry, "propensity", metrics={"propensity.auc": 0.90})
        promote()
        assert champion(registry, "propensity") == "1"
        return registry

    def candidate(self, c: Any, scored: str | None) -> str:
        """AUC 0.80 on its own rows, where the champion ``scored`` (version) got 0.78;
        ``scored`` "skipped: <why>": train did not score it."""
        tags = {"champion_same_rows.version": scored} if scored else {}
        same = {"propensity.champion_same_rows.auc": 0.78} if scored else {}
        if scored and scored.startswith("skipped: "):
            tags, same = {"champion_same_rows.skipped": scored.removeprefix("skipped: ")}, {}
        return register(c, "propensity", metrics={"propensity.auc": 0.80, **same}, tags=tags)

    def test_same_row_figures_decide(self, champion_v1: Any) -> None:
        c = champion_v1
        v2 = self.candidate(c, "1")
        _, decisions = promote()
        assert decisions["propensity"] == []
        assert champion(c, "propensity") == v2
        tag = c.get_model_version(REGISTERED_NAMES["propensity"], v2).tags["gate.auc_vs_champion"]
        assert tag == "passed: auc 0.8000 vs champion 0.7800 on the same test rows, tolerance 0.005"

    @pytest.mark.parametrize(
        ("scored", "why"),
        [
            (None, "no same-row figures (the run predates them)"),
            ("7", "the same-row figures are of v7, the champion is now v1"),
            (
                "skipped: champion v1 needs features the candidate's test rows lack: x",
                "no same-row figures (not scored at training: champion v1 needs features "
                "the candidate's test rows lack: x)",
            ),
        ],
    )
    def test_without_figures_of_this_champion_its_own_run_decides(
        self, champion_v1: Any, scored: str | None, why: str
    ) -> None:
        c = champion_v1
        self.candidate(c, scored)
        _, decisions = promote()
        assert decisions["propensity"] == [
            f"auc 0.8000 worse than champion 0.9000 in its own training run ({why}) "
            "beyond tolerance 0.005"
        ]
        assert champion(c, "propensity") == "1"
