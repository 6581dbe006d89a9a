"""Run a Dockerfile's build and start steps without a Docker engine (for tests/deploy).

:func:`parse` reads the instructions (continuations joined, exec-form JSON decoded) into
stages; :func:`target` picks the stages ``docker build --target`` would build. :class:`Emulator`
replays them into a folder that stands for the image's root: COPY
from the build context (honouring .dockerignore), WORKDIR, ENV (with ``$VAR`` expansion) and
every RUN command, with the image's absolute paths (``/opt``, ``/app``) mapped into that
folder. What only a container can do is not run, and :data:`SYSTEM_COMMANDS` names it
explicitly: OS packages and the service user (``apt-get``, ``groupadd``, ``useradd``,
``chown``). ``COPY --from=<image>`` is only supported for the uv image, mapped to this
environment's ``uv``.

``python -m tests.deploy.dockerfile [--target NAME] [--context DIR]`` replays one target into a
temporary folder and prints the size of what it installed: how docs/operations.md measures
the images without a Docker engine.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "SYSTEM_COMMANDS",
    "Emulator",
    "Instruction",
    "Stage",
    "dockerignore",
    "parse",
    "target",
    "tree_bytes",
]

#: commands of a RUN that need root inside the image; the emulator records and skips them
SYSTEM_COMMANDS = ("apt-get", "rm -rf /var/lib/apt/lists/*", "groupadd", "useradd", "chown")
_MAPPED = re.compile(r"(?<![\w./-])/(opt|app)(?=/|\b)")


@dataclass
class Instruction:
    op: str
    args: str
    flags: dict[str, str] = field(default_factory=dict)

    def exec_form(self) -> list[str]:
        out = json.loads(self.args)
        assert isinstance(out, list) and all(isinstance(x, str) for x in out), self.args
        return out


@dataclass
class Stage:
    image: str
    name: str | None
    steps: list[Instruction]

    def last(self, op: str) -> Instruction | None:
        found = [s for s in self.steps if s.op == op]
        return found[-1] if found else None


def parse(text: str) -> list[Stage]:
    lines: list[str] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        lines.append(buf + line)
        buf = ""
    stages: list[Stage] = []
    for line in lines:
        op, _, rest = line.strip().partition(" ")
        op = op.upper()
        flags = {}
        rest = rest.strip()
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            k, _, v = flag[2:].partition("=")
            flags[k] = v
            rest = rest.strip()
        if op == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], name, []))
        else:
            assert stages, f"{op} before FROM"
            stages[-1].steps.append(Instruction(op, rest, flags))
    return stages


def target(stages: list[Stage], name: str | None = None) -> list[Stage]:
    """The stages ``docker build --target <name>`` builds (default: the last), in file order:
    the target and every stage it starts ``FROM`` or copies ``--from``."""
    by_name = {s.name: s for s in stages if s.name}
    chosen = by_name[name] if name is not None else stages[-1]
    needed: list[Stage] = []
    todo = [chosen]
    while todo:
        stage = todo.pop()
        if any(stage is s for s in needed):
            continue
        needed.append(stage)
        deps = [stage.image, *(st.flags.get("from", "") for st in stage.steps if st.op == "COPY")]
        todo += [by_name[d] for d in deps if d in by_name]
    return [s for s in stages if any(s is n for n in needed)]


def dockerignore(root: Path) -> list[tuple[bool, str]]:
    """(negated, pattern) rules of ``root/.dockerignore`` in order."""
    f = root / ".dockerignore"
    rules = []
    for raw in f.read_text().splitlines() if f.exists() else []:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        rules.append((neg, line[1:].strip("/") if neg else line.strip("/")))
    return rules


def ignored(rel: str, rules: list[tuple[bool, str]]) -> bool:
    """Docker's rule: the last matching pattern decides (a path matches its parents' rules)."""
    parts = rel.split("/")
    result = False
    for neg, pat in rules:
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if _match(sub, pat):
                result = not neg
                break
    return result


def _match(path: str, pat: str) -> bool:
    if pat == "**":
        return True
    if pat.startswith("**/"):
        tail = pat[3:]
        return any(
            fnmatch.fnmatchcase("/".join(path.split("/")[i:]), tail)
            for i in range(len(path.split("/")))
        )
    return fnmatch.fnmatchcase(path, pat)


class Emulator:
    """Replays stages into ``rootfs``; ``context`` is the build context (the repository)."""

    def __init__(self, context: Path, rootfs: Path, uv: str, python: str) -> None:
        self.context = context
        self.rootfs = rootfs
        self.rules = dockerignore(context)
        self.skipped: list[str] = []
        self.ran: list[str] = []
        self.env: dict[str, str] = {}
        self.workdir = "/"
        (rootfs / "bin").mkdir(parents=True, exist_ok=True)
        os.symlink(python, rootfs / "bin" / "python")
        self._uv = uv
        self.base_path = f"{rootfs / 'bin'}:/usr/bin:/bin"

    def map(self, text: str) -> str:
        return _MAPPED.sub(lambda m: f"{self.rootfs}/{m.group(1)}", text)

    def path(self, container_path: str) -> Path:
        p = container_path if container_path.startswith("/") else f"{self.workdir}/{container_path}"
        return self.rootfs / os.path.normpath(p).lstrip("/")

    def run_stage(self, stage: Stage, extra_env: dict[str, str]) -> None:
        self.env = {"PATH": self.base_path, **extra_env}
        self.workdir = "/"
        for step in stage.steps:
            handler = getattr(self, f"_{step.op.lower()}", None)
            if handler is not None:
                handler(step)

    def _workdir(self, step: Instruction) -> None:
        self.workdir = step.args
        self.path(step.args).mkdir(parents=True, exist_ok=True)

    def _env(self, step: Instruction) -> None:
        for pair in shlex.split(step.args):
            key, _, value = pair.partition("=")
            value = re.sub(r"\$\{?(\w+)\}?", lambda m: self.env.get(m.group(1), ""), value)
            self.env[key] = self.map(value)

    def _copy(self, step: Instruction) -> None:
        *srcs, dst = shlex.split(step.args)
        src_from = step.flags.get("from")
        if src_from is not None and "/" in src_from:  # an image: only the uv binary
            assert src_from.startswith("ghcr.io/astral-sh/uv:"), src_from
            assert srcs == ["/uv"], srcs
            target = self.path(dst)
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                os.symlink(self._uv, target)
            return
        if src_from is not None:  # an earlier stage: same folder here, nothing to copy
            assert all(self.path(s) == self.path(dst) for s in srcs), step.args
            return
        target = self.path(dst)
        for src in srcs:
            assert not ignored(src.rstrip("/"), self.rules), f".dockerignore excludes {src}"
            s = self.context / src
            if s.is_dir():  # Docker copies a folder's contents into dst
                shutil.copytree(
                    s,
                    target,
                    dirs_exist_ok=True,
                    ignore=lambda d, names: [
                        n
                        for n in names
                        if ignored(str((Path(d) / n).relative_to(self.context)), self.rules)
                    ],
                )
            else:
                dest_dir = target if dst.endswith("/") else target.parent
                dest_dir.mkdir(parents=True, exist_ok=True)
                shutil.copy2(s, dest_dir / s.name if dst.endswith("/") else target)

    def _run(self, step: Instruction) -> None:
        for cmd in (c.strip() for c in step.args.split("&&")):
            if cmd.startswith(SYSTEM_COMMANDS):
                self.skipped.append(cmd)
                continue
            mapped = self.map(cmd)
            proc = subprocess.run(
                ["bash", "-c", mapped],
                cwd=self.path(self.workdir),
                env=self.env,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            assert proc.returncode == 0, f"RUN {cmd!r} failed:\n{proc.stdout}\n{proc.stderr}"
            self.ran.append(cmd)


def tree_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (symlinks not followed)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.deploy.dockerfile",
        description="Replay a Dockerfile target into a temporary folder; print its sizes.",
    )
    parser.add_argument("--target", help="stage name (default: the last stage)")
    parser.add_argument("--context", type=Path, default=Path("."), help="build context")
    parser.add_argument("--online", action="store_true", help="let uv download (default: cache)")
    args = parser.parse_args(argv)
    context = args.context.resolve()
    stages = target(parse((context / "Dockerfile").read_text()), args.target)
    bin_dir = Path(sys.executable).parent
    uv = shutil.which("uv", path=f"{bin_dir}:{os.environ.get('PATH', '')}")
    assert uv, "uv not found"
    env = {k: os.environ[k] for k in ("HOME", "UV_CACHE_DIR", "TMPDIR") if k in os.environ}
    if not args.online:
        env["UV_OFFLINE"] = "1"
    with tempfile.TemporaryDirectory(prefix="image-") as tmp:
        python = getattr(sys, "_base_executable", sys.executable)
        emu = Emulator(context, Path(tmp), uv=uv, python=python)
        for stage in stages:
            emu.run_stage(stage, env)
        venv, app = Path(tmp) / "opt" / "venv", Path(tmp) / "app"
        dists = len(list(venv.glob("lib/python*/site-packages/*.dist-info")))
        size = tree_bytes(venv)
        print(f"target: {stages[-1].name} (stages {[s.name for s in stages]})")
        print(f"/opt/venv: {size:,} bytes ({size / 2**20:,.0f} MiB), {dists} distributions")
        print(f"/app: {tree_bytes(app):,} bytes")
        print(f"not run (root only): {emu.skipped}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
