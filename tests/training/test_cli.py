"""The `python -m training` tree: every command is there, documented, and fails clearly."""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from training.cli import build_parser, main
from training.cli.parser import HelpFormatter

#: the commands the Makefile, compose.yaml and the README name
COMMANDS = {
    "all",
    "generate",
    "ingest",
    "features",
    "feature-store",
    "train",
    "figures",
    "ope-harness",
    "loop",
    "promote",
    "rollback",
    "export-bundle",
    "bank",
    "export-log",
    "report",
    "ope",
    "hillstrom",
    "simulate",
    "log-to-training",
    "adapt",
}


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _options(sp: argparse.ArgumentParser) -> list[argparse.Action]:
    """The options (``adapt``'s data set is a positional: it has help, no default)."""
    return [a for a in sp._actions if not isinstance(a, argparse._HelpAction) and a.option_strings]


class TestTree:
    def test_every_command_is_there(self) -> None:
        assert set(_commands()) == COMMANDS

    @pytest.mark.parametrize("command", sorted(COMMANDS))
    def test_help_works(self, command: str, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exc:
            main([command, "--help"])
        assert exc.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: python -m training {command}")
        for action in _options(_commands()[command]):
            assert action.option_strings[0] in out

    @pytest.mark.parametrize("command", sorted(COMMANDS))
    def test_every_option_has_help_and_shows_its_default(self, command: str) -> None:
        sp = _commands()[command]
        formatter = HelpFormatter(prog=sp.prog)
        for action in _options(sp):
            name = action.option_strings[0]
            assert action.help and action.help.strip(), f"{command} {name}: no help text"
            shown = formatter._get_help_string(action) or ""
            d = action.default
            if d not in (None, False, []) and not action.required:
                assert "default" in shown, f"{command} {name}: default {d!r} not shown"

    def test_shared_options_mean_the_same_everywhere(self) -> None:
        """--data and the pipeline options come from one definition each."""
        cmds = _commands()
        for name in ("generate", "ingest", "features", "feature-store", "train", "all", "simulate"):
            (data,) = [a for a in _options(cmds[name]) if a.dest == "data"]
            assert data.default is None and "NEXTBEST_DATA_DIR" in (data.help or "")
        all_opts = {a.dest for a in _options(cmds["all"])}
        for stage in ("generate", "train", "promote", "export-bundle"):
            assert {a.dest for a in _options(cmds[stage])} <= all_opts, stage

    def test_data_names_the_world_folder_for_one_command(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        import os

        monkeypatch.setenv("NEXTBEST_DATA_DIR", str(tmp_path / "elsewhere"))
        world = tmp_path / "w"
        assert main(["generate", "--customers", "400", "--seed", "3", "--data", str(world)]) == 0
        assert (world / "world.json").exists() and (world / "raw" / "messages.parquet").exists()
        assert (world / "features" / "customer_behaviour.parquet").exists()
        assert f"-> {world}" in capsys.readouterr().out
        assert os.environ["NEXTBEST_DATA_DIR"] == str(tmp_path / "elsewhere")  # restored
        assert not (tmp_path / "elsewhere").exists()

    def test_version(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exc:
            main(["--version"])
        assert exc.value.code == 0
        assert capsys.readouterr().out.strip().endswith(f"(nextbest {version('nextbest')})")

    def test_a_command_is_required(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exc:
            main([])
        assert exc.value.code == 2
        assert "COMMAND" in capsys.readouterr().err


class TestMissingDependency:
    """A command whose dependency is missing still runs far enough to say what to install."""

    def test_a_missing_extra_is_named(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        import mlflow

        # MLflow written straight to PostgreSQL needs psycopg, from the extra [postgres]
        monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg fails
        monkeypatch.setenv("NEXTBEST_VAR_DIR", str(tmp_path))
        monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql+psycopg://127.0.0.1:1/nextbest")
        before = mlflow.get_tracking_uri()
        try:
            assert main(["promote"]) == 1
        finally:  # mlflow keeps a process-wide URI
            mlflow.set_tracking_uri(before)
        err = capsys.readouterr().err
        assert "python -m training promote" in err
        assert "'psycopg'" in err and "pip install 'nextbest[postgres]'" in err

    def test_a_missing_core_dependency_is_named(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        path = tmp_path / "bank.csv"
        path.write_text("age;y\n30;no\n")
        monkeypatch.setitem(sys.modules, "lightgbm", None)
        assert main(["bank", "--path", str(path)]) == 1
        err = capsys.readouterr().err
        assert "'lightgbm'" in err and "pip install -e ." in err

    def test_a_missing_module_of_ours_is_a_bug_and_raises(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setitem(sys.modules, "training.measurement.log_training", None)
        with pytest.raises(ModuleNotFoundError):
            main(["log-to-training", "--log", "missing", "--out", "missing.parquet"])
