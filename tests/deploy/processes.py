"""Child processes for the deployment tests: started in their own process group, always stopped.

A server that forks workers (uvicorn with NEXTBEST_WORKERS > 1, ``mlflow server``) leaves its
workers running if only the parent is signalled, so :meth:`Child.stop` signals the whole group
(SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx

__all__ = ["Child", "free_port", "wait_http"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Child:
    """One command in its own process group; output to ``log``."""

    def __init__(
        self,
        args: Sequence[str],
        log: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.args = list(args)
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 40) -> str:
        self._out.flush()
        lines = self.log.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def stop(self, grace_s: float = 10.0) -> int | None:
        """SIGTERM to the process group, SIGKILL after ``grace_s``; returns the exit code."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=grace_s)
        # workers of a server whose parent already exited are still in the group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self._out.close()
        return self.proc.returncode

    def __enter__(self) -> Child:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def wait_http(
    child: Child,
    url: str,
    timeout_s: float,
    ok: Callable[[httpx.Response], bool] = lambda r: r.status_code == 200,
) -> httpx.Response:
    """Poll ``url`` until ``ok``; fail early (with the log's tail) if the child exits."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(
                f"{child.args[:4]} exited with {child.proc.returncode}:\n{child.tail()}"
            )
        try:
            resp = httpx.get(url, timeout=5)
            if ok(resp):
                return resp
            last = f"{resp.status_code} {resp.text[:300]}"
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.25)
    raise TimeoutError(f"{url} not ready after {timeout_s:.0f}s (last: {last}):\n{child.tail()}")
