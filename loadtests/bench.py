"""`python -m loadtests.bench` (`make bench`): the service against an assembled-from-parts baseline.

Runs after the main job (`make demo`: world + model bundle). In one run, on one machine:

1. starts its own redis-server on a free loopback port (stopped at the end; or --redis-url),
   applies the Feast repository and materializes the world's features into it (Feast's Redis
   online store), seeds contact history so a share of customers sit at their caps;
2. **in-process**: the decision function over the traffic mix (loadtests/traffic.py) and over
   the full case (10 candidates x 5 channels, consented customers), for the service and the
   baseline (loadtests/baseline.py: Feast SDK + LightGBM + the same policy code), with a
   per-stage breakdown, plus the raw floor (Redis round trip, the three ONNX runs alone);
3. **over HTTP**: each implementation served by the production server (`python -m service`,
   uvicorn, NEXTBEST_WORKERS) and driven by wrk (C, Lua pacing) at fixed offered rates and
   at saturation; then Locust with the realistic /decide + /feedback mix against the service;
4. prints a table, writes JSON and a chart (PNG: in-process stages, HTTP latency against
   throughput) under var/bench/ (git-ignored); ``--figure PATH`` also writes the chart there
   (docs/figures/bench.png is made that way).

Timings on a shared 2-core machine are noisy: compare the ratios within one run. Without
wrk (Debian package `wrk`) the HTTP part says loudly that it is skipped; `make bench`
installs it when it can.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from loadtests.inprocess import Timings, decide_timed, measure_floor  # noqa: E402
from loadtests.traffic import NOW, load_mix  # noqa: E402

API_KEY = "bench-key-not-secret"
WRK_SCRIPT = ROOT / "loadtests" / "wrk_decide.lua"
LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"
IMPLS = ("service", "baseline")
SERVER_MODULE = {"service": "service", "baseline": "loadtests.baseline"}
#: share of the mix's known customers whose contact history is seeded at the caps
AT_CAP_SHARE = 0.05


def log(msg: str) -> None:
    print(f"[bench {datetime.now():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load_avg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


# ----------------------------------------------------------------- redis + feature store
@contextlib.contextmanager
def redis_server(url: str | None, workdir: Path) -> Iterator[str]:
    """The given URL, or a redis-server of our own on a free port (stopped on exit)."""
    if url:
        yield url
        return
    sys.path.insert(0, str(ROOT / "scripts"))
    from ensure_redis import answers, redis_binary  # type: ignore[import-not-found]

    binary = redis_binary()
    if not binary:
        raise SystemExit("bench: no redis-server binary (apt-get install redis-server)")
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--dir", str(workdir), "--logfile", str(workdir / "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    try:
        for _ in range(100):
            if answers(url):
                break
            time.sleep(0.05)
        else:
            raise SystemExit(f"bench: redis-server on {port} does not answer")
        log(f"redis-server pid {proc.pid} on port {port}")
        yield url
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)


def materialize(url: str, data_dir: Path) -> float:
    from training.datasets.world import World
    from training.pipeline.featurestore import apply, clear_online
    from training.pipeline.featurestore import materialize as feast_materialize

    t = time.perf_counter()
    apply("redis", url)
    clear_online("redis", url)  # a --redis-url may hold another world's (not older) rows
    feast_materialize("redis", url, end=World.load(data_dir).config.end_ts)
    return time.perf_counter() - t


def reset_state(url: str, at_cap: Sequence[str], now: float) -> None:
    """Drop the service's own keys (contacts, logs, real-time state), keep Feast's features;
    then put ``at_cap`` customers at their push/sms/overall caps."""
    import redis

    from contracts.keys import PREFIX, contacts_key

    r = redis.Redis.from_url(url)
    batch = []
    for key in r.scan_iter(match=f"{PREFIX}*", count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            r.delete(*batch)
            batch.clear()
    if batch:
        r.delete(*batch)
    with r.pipeline(transaction=False) as pipe:
        for i, cid in enumerate(at_cap):
            key = contacts_key(cid)
            for j, ch in enumerate(("push", "sms", "email")):
                ts = now - 3600.0 * (j + 1)
                pipe.zadd(key, {f"{ts:.3f}|{ch}|seed{i}{j}": ts})
            pipe.expire(key, 8 * 86400)
        pipe.execute()
    r.close()


# ----------------------------------------------------------------------------- requests
def mix_bodies(data_dir: Path, n: int, seed: int) -> tuple[list[bytes], list[str]]:
    mix = load_mix(data_dir, seed=seed)
    enc = msgspec.json.Encoder()
    bodies = [enc.encode(mix.decide_body()) for _ in range(n)]
    k = max(1, int(len(mix.customers) * AT_CAP_SHARE))
    return bodies, mix.customers[:: max(1, len(mix.customers) // k)][:k]


def full_case_bodies(data_dir: Path, n: int, seed: int) -> list[bytes]:
    """10 candidates x 5 channels: campaign placement, distinct customers with every consent."""
    import pandas as pd

    p = pd.read_parquet(data_dir / "features" / "customer_profile.parquet")
    ok = p[
        (p.opted_out == 0) & (p.consent_email == 1) & (p.consent_push == 1) & (p.consent_sms == 1)
    ]
    ids = ok.customer_id.drop_duplicates().sample(frac=1.0, random_state=seed).tolist()
    offers = pd.read_parquet(data_dir / "raw" / "offers.parquet")["offer_id"].iloc[:18].tolist()
    rng = random.Random(seed)
    enc = msgspec.json.Encoder()
    return [
        enc.encode(
            {
                "customer_id": ids[i % len(ids)],
                "context": {"placement": "campaign"},
                "candidates": rng.sample(offers, min(10, len(offers))),
                "now": NOW,
            }
        )
        for i in range(n)
    ]


# ---------------------------------------------------------------------------- in-process
def bench_settings(url: str, models_dir: Path, spool: Path, timeout_ms: float) -> Any:
    from contracts.settings import Settings

    return Settings.from_env(
        {
            **os.environ,
            "NEXTBEST_REDIS_URL": url,
            "NEXTBEST_REDIS_TIMEOUT_MS": str(timeout_ms),
            "NEXTBEST_MODELS_DIR": str(models_dir),
            "NEXTBEST_SPOOL_DIR": str(spool),
            "NEXTBEST_DEV_MODE": "1",
            "NEXTBEST_LOG_LEVEL": "WARNING",
            "NEXTBEST_MODEL_POLL_S": "0",
            "NEXTBEST_SCHEDULER_POLL_S": "0",
            "MLFLOW_TRACKING_URI": "",
        }
    )


def _app(impl: str, settings: Any) -> Any:
    """The app as the server builds it, with a stage recorder as its metrics."""
    from loadtests.inprocess import StageRecorder
    from service.app import create_app

    if impl == "service":
        return create_app(settings, metrics=StageRecorder())
    from loadtests.baseline import feast_sdk_reader, lightgbm_loader

    return create_app(
        settings, model_loader=lightgbm_loader, features=feast_sdk_reader, metrics=StageRecorder()
    )


async def _inprocess(
    url: str, args: argparse.Namespace, cases: dict[str, list[bytes]], at_cap: Sequence[str]
) -> dict[str, Any]:
    """Both implementations alive in one process, fed the same blocks of requests in turn
    (service, baseline, service, ...), each block from the same reset Redis state: drifts in
    what else the machine is doing hit both alike."""
    now = datetime.fromisoformat(NOW).timestamp()
    apps = {}
    for impl in IMPLS:
        timeout = 25.0 if impl == "service" else 1000.0  # as for the servers (see Server)
        apps[impl] = _app(
            impl, bench_settings(url, args.models_dir, args.out / f"spool-{impl}", timeout)
        )
    out: dict[str, Any] = {impl: {} for impl in IMPLS}
    async with contextlib.AsyncExitStack() as stack:
        for app in apps.values():
            await stack.enter_async_context(app.lifespan())
        engines = {impl: app.state.engine for impl, app in apps.items()}
        for case, bodies in cases.items():
            warm, measured = bodies[: args.warmup], bodies[args.warmup :]
            acc = {impl: Timings() for impl in IMPLS}
            for impl in IMPLS:
                reset_state(url, at_cap, now)
                await decide_timed(engines[impl], warm, len(warm))
            step = max(1, args.block)
            for k in range(0, len(measured), step):
                for impl in IMPLS:
                    reset_state(url, at_cap, now)
                    await decide_timed(engines[impl], measured[k : k + step], 0, acc[impl])
            for impl in IMPLS:
                out[impl][case] = acc[impl].summary()
            log(f"in-process: {case} done ({len(measured)} requests each)")
        if args.floor_n:
            unit = msgspec.json.decode(cases["full"][0])["customer_id"] if "full" in cases else None
            out["service"]["floor"] = await measure_floor(engines["service"], args.floor_n, unit)
    return out


def run_inprocess(
    url: str, args: argparse.Namespace, cases: dict[str, list[bytes]], at_cap: Sequence[str]
) -> dict[str, Any]:
    log(f"in-process: service and baseline interleaved in blocks of {args.block}")
    return asyncio.run(_inprocess(url, args, cases, at_cap))


# ---------------------------------------------------------------------------------- http
class Server:
    """One implementation under the production server (`python -m service` settings)."""

    def __init__(self, impl: str, url: str, args: argparse.Namespace) -> None:
        self.impl = impl
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "NEXTBEST_HOST": "127.0.0.1",
            "NEXTBEST_PORT": str(self.port),
            "NEXTBEST_WORKERS": str(args.workers),
            "NEXTBEST_REDIS_URL": url,
            "NEXTBEST_MODELS_DIR": str(args.models_dir),
            "NEXTBEST_SPOOL_DIR": str(args.out / f"spool-{impl}"),
            "NEXTBEST_API_KEYS": API_KEY,
            "NEXTBEST_DEV_MODE": "0",
            "NEXTBEST_LOG_LEVEL": "WARNING",
            # the baseline's blocking Feast call would often overrun the service's 25 ms
            # budget and fall back to a (cheaper) cold-start decision: give it room to finish
            "NEXTBEST_REDIS_TIMEOUT_MS": os.environ.get("NEXTBEST_REDIS_TIMEOUT_MS", "25")
            if impl == "service"
            else "1000",
        }
        env.pop("MLFLOW_TRACKING_URI", None)  # serve the bundle under test
        self.log_path = args.out / f"server-{impl}.log"
        self.log_file = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", SERVER_MODULE[impl]],
            cwd=ROOT,
            env=env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 120.0) -> None:
        import logging

        import httpx

        logging.getLogger("httpx").setLevel(logging.WARNING)

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.impl} server exited; see {self.log_path}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base}/ready", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.25)
        raise RuntimeError(
            f"{self.impl} server not ready after {timeout:.0f}s; see {self.log_path}"
        )

    def cpu_seconds(self) -> float | None:
        """User + system CPU of the server's processes (its own group: master + workers)."""
        total = 0
        try:
            tick = os.sysconf("SC_CLK_TCK")
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                with contextlib.suppress(OSError):
                    stat = Path(f"/proc/{entry}/stat").read_text()
                    fields = stat[stat.rfind(")") + 2 :].split()
                    if int(fields[2]) == self.proc.pid:  # process group
                        total += int(fields[11]) + int(fields[12])
        except (OSError, ValueError):
            return None
        return total / tick

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the server and its workers (own group)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log_file.close()


def wrk(
    server: Server, bodies_file: Path, rate: int, conns: int, duration: float
) -> dict[str, Any]:
    """One wrk row, with the server's CPU time per request over the same interval (steadier
    than throughput when other work shares the cores)."""
    base = server.base
    cpu0 = server.cpu_seconds()
    cmd = [
        "wrk", "-t1", f"-c{conns}", f"-d{max(1, round(duration))}s", "--timeout", "2s", "-s", str(WRK_SCRIPT),
        base, "--", str(bodies_file), str(rate), API_KEY,
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    line = next((x for x in out.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result: {out.stdout[-500:]} {out.stderr[-500:]}")
    cpu1 = server.cpu_seconds()
    raw = json.loads(line[len("WRK_JSON ") :])
    secs = raw["duration_us"] / 1e6
    cpu_ms = (
        (cpu1 - cpu0) * 1000.0 / raw["requests"]
        if cpu0 is not None and cpu1 is not None and raw["requests"]
        else None
    )
    errors = sum(
        raw[k]
        for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    return {
        "offered_rps": rate or None,
        "connections": conns,
        "requests": raw["requests"],
        "achieved_rps": raw["requests"] / secs if secs else 0.0,
        # full decisions per second: a 200 flagged degraded fell back (e.g. a state read over
        # the budget became a cold-start decision), cheaper work that must not count as done
        "full_rps": max(raw["requests"] - raw["degraded"] - errors, 0) / secs if secs else 0.0,
        "p50": raw["p50_us"] / 1000.0,
        "p90": raw["p90_us"] / 1000.0,
        "p99": raw["p99_us"] / 1000.0,
        "p999": raw["p999_us"] / 1000.0,
        "max": raw["max_us"] / 1000.0,
        "errors": errors,
        "degraded": raw["degraded"],
        "server_cpu_ms_per_request": cpu_ms,
        "error_detail": {k: raw[k] for k in raw if k.endswith("errors") or k == "timeouts"},
    }


def rate_connections(rate: int) -> int:
    """Enough connections that the schedule holds up to ~40 ms latency, at least 8."""
    return max(8, rate // 25)


def locust(base: str, data_dir: Path, users: int, duration: float) -> dict[str, Any]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "NEXTBEST_API_KEY": API_KEY,
        "NEXTBEST_DATA_DIR": str(data_dir),
    }
    cmd = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", str(users),
        "-r", str(users), "-t", f"{duration:g}s", "--host", base, "--only-summary",
        "--stop-timeout", "5", "--loglevel", "WARNING",
    ]  # fmt: skip
    out = subprocess.run(
        cmd, capture_output=True, text=True, env=env, timeout=duration + 120, cwd=ROOT
    )
    line = next(
        (x for x in (out.stdout + out.stderr).splitlines() if x.startswith("LOCUST_JSON ")), None
    )
    if line is None:
        return {"error": f"locust printed no summary (exit {out.returncode}): {out.stderr[-800:]}"}
    res: dict[str, Any] = json.loads(line[len("LOCUST_JSON ") :])
    res["users"] = users
    return res


def run_http(
    url: str,
    args: argparse.Namespace,
    bodies: list[bytes],
    at_cap: Sequence[str],
) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        msg = "wrk not found: HTTP benchmark SKIPPED (apt-get install -y wrk; `make bench` tries)"
        log("!" * 10 + " " + msg)
        return {"skipped": msg}
    bodies_file = args.out / "bodies.jsonl"
    bodies_file.write_bytes(b"\n".join(bodies) + b"\n")
    now = datetime.fromisoformat(NOW).timestamp()
    out: dict[str, Any] = {"workers": args.workers, "duration_s": args.duration}
    servers: dict[str, Server] = {}
    try:
        for impl in IMPLS:  # both up at once; the idle one costs next to nothing
            log(f"http: starting {impl} ({args.workers} workers)")
            servers[impl] = Server(impl, url, args)
        for impl in IMPLS:
            servers[impl].wait_ready()
            wrk(servers[impl], bodies_file, 0, 8, max(2.0, args.duration / 3))  # warm up
        rows: dict[str, dict[str, Any]] = {impl: {"rates": []} for impl in IMPLS}
        # rows alternate between the two, each from the same reset Redis state
        for rate in [*args.rates, 0]:
            for impl in IMPLS:
                reset_state(url, at_cap, now)
                if rate:
                    log(f"http: {impl} at {rate} req/s offered")
                    rows[impl]["rates"].append(
                        wrk(servers[impl], bodies_file, rate, rate_connections(rate), args.duration)
                    )
                else:
                    log(f"http: {impl} at saturation ({args.sat_connections} connections)")
                    rows[impl]["saturation"] = wrk(
                        servers[impl], bodies_file, 0, args.sat_connections, args.duration
                    )
        if args.locust_users:
            reset_state(url, at_cap, now)
            log(f"http: locust realistic mix against the service, {args.locust_users} users")
            rows["service"]["locust"] = locust(
                servers["service"].base, args.data_dir, args.locust_users, args.locust_duration
            )
        out.update(rows)
    finally:
        for server in servers.values():
            server.stop()
    return out


# --------------------------------------------------------------------------------- report
def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    ip = res.get("inprocess", {})
    svc = ip.get("service", {})
    floor = svc.get("floor", {}).get("floor", {}).get("p50")
    full = svc.get("full", {}).get("stages", {}).get("total", {})
    if floor and full:
        rows.append(
            {
                "target": "in-process full case p50 <= 2x raw floor",
                "value": f"{full['p50']:.2f} ms = {full['p50'] / floor:.2f}x floor {floor:.2f} ms",
                "met": full["p50"] <= 2 * floor,
            }
        )
        rows.append(
            {
                "target": "in-process full case p99 <= 4 ms",
                "value": f"{full['p99']:.2f} ms",
                "met": full["p99"] <= 4.0,
            }
        )
    http = res.get("http", {})
    s = http.get("service")
    b = http.get("baseline")
    if s:
        at = next((r for r in s["rates"] if r["offered_rps"] == 1000), None)
        if at:
            ok = (
                at["p99"] <= 15.0
                and at["errors"] == 0
                and at["degraded"] == 0
                and at["achieved_rps"] >= 950
            )
            rows.append(
                {
                    "target": "HTTP p99 <= 15 ms at 1,000 req/s, zero errors (and none degraded)",
                    "value": f"p99 {at['p99']:.2f} ms, {at['errors']} errors, "
                    f"{at['degraded']} degraded, {at['achieved_rps']:.0f} req/s achieved",
                    "met": ok,
                }
            )
    if s and b:
        ss, bs = s["saturation"], b["saturation"]
        ratio = ss["full_rps"] / max(bs["full_rps"], 1e-9)
        rows.append(
            {
                "target": "saturation throughput >= 3x baseline, p99 <= baseline's",
                "value": f"{ratio:.2f}x in full (not degraded) decisions/s ({ss['full_rps']:.0f} "
                f"vs {bs['full_rps']:.0f}; all responses {ss['achieved_rps']:.0f} vs "
                f"{bs['achieved_rps']:.0f} req/s), p99 {ss['p99']:.1f} vs {bs['p99']:.1f} ms",
                "met": ratio >= 3.0 and ss["p99"] <= bs["p99"],
            }
        )
        sc, bc = ss.get("server_cpu_ms_per_request"), bs.get("server_cpu_ms_per_request")
        if sc and bc:
            rows.append(
                {
                    "target": "(context) server CPU per request at saturation, baseline / service",
                    "value": f"{bc / sc:.2f}x ({bc:.2f} vs {sc:.2f} ms)",
                    "met": bc / sc >= 3.0,
                }
            )
    return rows


def render(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = [
        f"nextbest benchmark {res['started_at']}  command: {res['command']}",
        f"machine: {m['cores']} cores, {m['platform']}; load average at start "
        f"{m['load_start']}, at end {m.get('load_end')}",
        f"world: {res['world']['customers']:,} customers; in-process: {res['requests']} "
        f"requests per case after {res['warmup']} warm-up, one at a time",
    ]
    ip = res.get("inprocess")
    if ip:
        lines.append("")
        lines.append(
            "In-process decision (ms; decode -> decide -> encode, same requests, same Redis)"
        )
        hdr = f"  {'case':<10} {'stage':<9} {'service p50':>11} {'p99':>7}   {'baseline p50':>12} {'p99':>7}   {'p50 ratio':>9}"
        lines.append(hdr)
        for case in res["cases"]:
            for stage in (*STAGE_ORDER, "total", "cpu"):
                sv = ip["service"][case]["stages"][stage]
                bv = ip["baseline"][case]["stages"][stage]
                ratio = bv["p50"] / sv["p50"] if sv.get("p50") else float("nan")
                lines.append(
                    f"  {case if stage == 'decode' else '':<10} {stage:<9} {_ms(sv['p50']):>11} "
                    f"{_ms(sv['p99']):>7}   {_ms(bv['p50']):>12} {_ms(bv['p99']):>7}   "
                    f"{ratio:>8.1f}x"
                )
            lines.append(f"  {'':<10} outcomes  service {ip['service'][case]['outcomes']}")
        fl = ip["service"].get("floor")
        if fl:
            lines.append(
                f"  raw floor (same run): Redis PING p50 {fl['redis_rtt']['p50']:.3f} ms; "
                f"3 ONNX runs ({fl['shapes']['propensity']}/{fl['shapes']['send_time']}/"
                f"{fl['shapes']['channel']} rows) p50 {fl['onnx_3_runs']['p50']:.3f} ms; "
                f"sum p50 {fl['floor']['p50']:.3f} ms"
            )
            if fl.get("state_read", {}).get("n"):
                lines.append(
                    f"  for reference, the decision's one state read (pipelined: real-time row, "
                    f"cart, features, contacts, purchases; decoded) p50 "
                    f"{fl['state_read']['p50']:.3f} ms, p99 {fl['state_read']['p99']:.3f} ms"
                )
    http = res.get("http")
    if http and "skipped" in http:
        lines += ["", f"HTTP: SKIPPED - {http['skipped']}"]
    elif http:
        lines.append("")
        lines.append(
            f"HTTP /decide (uvicorn + uvloop + httptools, {http['workers']} workers; wrk 1 thread, "
            f"{http['duration_s']:g}s per row; ms)"
        )
        lines.append(
            f"  {'offered':>10} {'conns':>5} | {'service rps':>11} {'p50':>6} {'p99':>7} {'err/deg':>7}"
            f" {'cpu/req':>7} | {'baseline rps':>12} {'p50':>7} {'p99':>8} {'err/deg':>7}"
            f" {'cpu/req':>7}"
        )
        s, b = http.get("service", {}), http.get("baseline", {})
        rows = list(zip(s.get("rates", []), b.get("rates", []), strict=False))
        rows.append((s.get("saturation"), b.get("saturation")))
        for sr, br in rows:
            label = f"{sr['offered_rps']}" if sr["offered_rps"] else "saturation"
            se, be = f"{sr['errors']}/{sr['degraded']}", f"{br['errors']}/{br['degraded']}"
            lines.append(
                f"  {label:>10} {sr['connections']:>5} | {sr['achieved_rps']:>11.0f} {sr['p50']:>6.2f}"
                f" {sr['p99']:>7.2f} {se:>7} {_ms(sr.get('server_cpu_ms_per_request')):>7} | "
                f"{br['achieved_rps']:>12.0f} {br['p50']:>7.2f} {br['p99']:>8.2f} {be:>7} "
                f"{_ms(br.get('server_cpu_ms_per_request')):>7}"
            )
        lines.append(
            "  (err/deg: HTTP errors / 200 responses flagged degraded, e.g. a state read over the "
            "25 ms budget;\n   cpu/req: CPU ms of the server's processes per request in that row)"
        )
        lc = s.get("locust")
        if lc:
            if "error" in lc:
                lines.append(f"  locust: {lc['error']}")
            else:
                lines.append(
                    f"  locust realistic mix (/decide + /feedback, {lc['users']} users, "
                    f"{lc['duration_s']:g}s): {lc['requests']} requests, {lc['failures']} failures, "
                    f"{lc['rps']:.0f} req/s, p50 {lc['p50']:.0f} / p95 {lc['p95']:.0f} / "
                    f"p99 {lc['p99']:.0f} ms (decide p99 {lc.get('decide_p99', 0):.0f}, "
                    f"feedback p99 {lc.get('feedback_p99', 0):.0f})"
                )
    rows = res.get("targets", [])
    if rows:
        lines.append("")
        lines.append("Targets")
        for t in rows:
            lines.append(f"  [{'met' if t['met'] else 'MISSED'}] {t['target']}: {t['value']}")
    return "\n".join(lines)


STAGE_ORDER = ("decode", "read", "matrices", "scoring", "policy", "commit", "response", "encode")


# ----------------------------------------------------------------------------------- main
def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.bench", description=__doc__.splitlines()[0]
    )
    p.add_argument("--data-dir", type=Path, default=None, help="world (default var/world)")
    p.add_argument("--models-dir", type=Path, default=ROOT / "models", help="model bundle")
    p.add_argument("--out", type=Path, default=ROOT / "var" / "bench", help="output folder")
    p.add_argument("--redis-url", default=None, help="use this Redis (default: start one)")
    p.add_argument("--requests", type=int, default=3000, help="in-process requests per case")
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--block", type=int, default=250, help="in-process requests per turn")
    p.add_argument("--floor-n", type=int, default=3000, help="samples of the raw floor")
    p.add_argument("--rates", default="250,500,1000,2000", help="offered req/s for wrk")
    p.add_argument("--duration", type=float, default=15.0, help="seconds per wrk row")
    p.add_argument("--sat-connections", type=int, default=16)
    p.add_argument("--workers", type=int, default=int(os.environ.get("NEXTBEST_WORKERS", "2")))
    p.add_argument("--locust-users", type=int, default=20)
    p.add_argument("--locust-duration", type=float, default=20.0)
    p.add_argument("--no-http", action="store_true", help="in-process part only")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--figure",
        type=Path,
        default=None,
        help="also write the run's chart here (e.g. docs/figures/bench.png)",
    )
    a = p.parse_args(argv)
    a.rates = [int(x) for x in str(a.rates).split(",") if x.strip()]
    a.models_dir = a.models_dir.resolve()
    a.out = a.out.resolve()
    return a


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    from training.settings import paths

    args.data_dir = (args.data_dir or paths().data_dir).resolve()
    if not (args.data_dir / "features" / "customer_profile.parquet").exists():
        print(f"bench: no world at {args.data_dir}: run `make demo` first", file=sys.stderr)
        return 2
    if not (args.models_dir / "manifest.json").exists():
        print(
            f"bench: no model bundle at {args.models_dir}: run `make demo` first", file=sys.stderr
        )
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    # Feast registry of the bench's own online store, away from the main job's
    saved = {k: os.environ.get(k) for k in ("NEXTBEST_VAR_DIR", "NEXTBEST_DATA_DIR")}
    os.environ["NEXTBEST_VAR_DIR"] = str(args.out / "state")
    os.environ["NEXTBEST_DATA_DIR"] = str(args.data_dir)
    try:
        return _run(args, argv)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    started = datetime.now(UTC)
    res: dict[str, Any] = {
        "started_at": started.isoformat(timespec="seconds"),
        "command": " ".join(["python -m loadtests.bench", *(argv or sys.argv[1:])]),
        "machine": {
            "cores": os.cpu_count(),
            "platform": f"{platform.machine()} {platform.python_implementation()} "
            f"{platform.python_version()}",
            "load_start": load_avg(),
        },
        "requests": args.requests,
        "warmup": args.warmup,
        "cases": ["mix", "full"],
    }
    import pandas as pd

    res["world"] = {
        "customers": int(
            pd.read_parquet(
                args.data_dir / "features" / "customer_profile.parquet", columns=["customer_id"]
            ).customer_id.nunique()
        )
    }
    mix, at_cap = mix_bodies(args.data_dir, args.requests + args.warmup, args.seed)
    full = full_case_bodies(args.data_dir, args.requests + args.warmup, args.seed)
    with redis_server(args.redis_url, args.out / "redis") as url:
        log("materializing features into the bench Redis (Feast)")
        res["materialize_s"] = round(materialize(url, args.data_dir), 1)
        res["inprocess"] = run_inprocess(url, args, {"mix": mix, "full": full}, at_cap)
        if not args.no_http:
            http_bodies, _ = mix_bodies(args.data_dir, 20_000, args.seed + 1)
            res["http"] = run_http(url, args, http_bodies, at_cap)
    res["machine"]["load_end"] = load_avg()
    res["targets"] = targets(res)
    table = render(res)
    res["table"] = table
    stamp = started.strftime("%Y%m%d-%H%M%S")
    payload = json.dumps(res, indent=2, default=str)
    (args.out / f"bench-{stamp}.json").write_text(payload)
    (args.out / "latest.json").write_text(payload)
    chart = args.out / f"bench-{stamp}.png"
    plot(res, chart)
    if args.figure is not None:
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(chart, args.figure)
    print(table)
    print(f"\nJSON: {args.out / f'bench-{stamp}.json'}; chart: {args.figure or chart}")
    return 0


def plot(res: dict[str, Any], path: Path) -> None:
    """The run's chart: in-process p50 per stage (service vs baseline, full case) and, when the
    HTTP part ran, p99 latency against achieved throughput for both servers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    http = res.get("http") or {}
    panels = 2 if http and "skipped" not in http else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.0 * panels, 4.2), squeeze=False)
    ax = axes[0][0]
    ip = res["inprocess"]
    stages = [s for s in STAGE_ORDER if ip["service"]["full"]["stages"].get(s, {}).get("n")]
    x = range(len(stages))
    for k, impl in enumerate(IMPLS):
        vals = [ip[impl]["full"]["stages"][s]["p50"] for s in stages]
        ax.bar([i + (k - 0.5) * 0.4 for i in x], vals, width=0.4, label=impl)
    ax.set_xticks(list(x), stages, rotation=30)
    ax.set_ylabel("p50 per decision (ms)")
    total = {impl: ip[impl]["full"]["stages"]["total"]["p50"] for impl in IMPLS}
    ax.set_title(
        f"in-process, full case: total p50 {total['service']:.2f} vs {total['baseline']:.2f} ms"
    )
    ax.legend()
    if panels == 2:
        ax = axes[0][1]
        for impl in IMPLS:
            rows = [*http[impl]["rates"], http[impl]["saturation"]]
            ax.plot([r["achieved_rps"] for r in rows], [r["p99"] for r in rows], "o-", label=impl)
        ax.set_xlabel("achieved requests/s")
        ax.set_ylabel("p99 latency (ms)")
        ax.set_yscale("log")
        ax.set_title(f"HTTP /decide, {http['workers']} workers (wrk, rising offered rate)")
        ax.legend()
    fig.suptitle(f"nextbest benchmark {res['started_at']} ({res['machine']['cores']} cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
