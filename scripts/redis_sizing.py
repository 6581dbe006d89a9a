"""Measure Redis memory: per customer (Feast rows), per active real-time customer, per decision.

    python scripts/redis_sizing.py [--var-dir var] [--models models] [--decisions 10000]

Uses a generated world (``python -m training generate``; default ./var) and a model bundle.
Starts its own empty `redis-server` (loopback, free port, no persistence; stopped at the end)
and reads ``INFO memory`` ``used_memory`` before and after each step:

1. ``feast apply`` + materialize the world into it: bytes per known customer (all feature
   views of one customer are one hash);
2. one ``cart_add`` and one ``page_view`` event for N customers through ``POST /events``:
   bytes per customer with real-time state (state hash, cart, windows, event markers, the
   `customer_realtime` row);
3. N decisions (``POST /decide``, placement campaign) and one feedback each: bytes per
   decision (decision record, log stream entry, contact) and per feedback (marker + entry).

Prints the figures and the 1M-customer projection. Decision-log memory grows with traffic,
not with customers: records live 30 days (NEXTBEST_*), streams are capped by
NEXTBEST_LOG_MAXLEN, so size it as decisions/day x retention.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from ensure_redis import free_port, redis_binary  # noqa: E402


def used(client: Any) -> int:
    return int(client.info("memory")["used_memory"])


async def _traffic(url: str, models: Path, spool: Path, ids: list[str]) -> dict[str, int]:
    import redis
    from litestar.testing import AsyncTestClient

    from contracts.settings import Settings
    from service.app import create_app

    r = redis.Redis.from_url(url)
    s = Settings.from_env(
        {
            "NEXTBEST_REDIS_URL": url,
            "NEXTBEST_MODELS_DIR": str(models),
            "NEXTBEST_API_KEYS": "sizing",
            "NEXTBEST_SPOOL_DIR": str(spool),
            "NEXTBEST_MODEL_POLL_S": "0",
            "NEXTBEST_SCHEDULER_POLL_S": "0",
            "NEXTBEST_REDIS_TIMEOUT_MS": "2000",
        }
    )
    auth = {"Authorization": "Bearer sizing"}
    out: dict[str, int] = {}
    async with AsyncTestClient(app=create_app(s)) as c:
        now = time.time()
        before = used(r)
        for i in range(0, len(ids), 100):
            events = []
            for cid in ids[i : i + 100]:
                for typ, dt in (("cart_add", 300), ("page_view", 200)):
                    events.append(
                        {
                            "event_id": f"{cid}-{typ}",
                            "type": typ,
                            "customer_id": cid,
                            "offer_id": "OFF001",
                            "value": 20.0,
                            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - dt)),
                        }
                    )
            resp = await c.post("/events", json={"events": events}, headers=auth)
            assert resp.status_code == 200, resp.text
        out["realtime"] = used(r) - before
        before = used(r)
        decisions = []
        for cid in ids:
            resp = await c.post(
                "/decide",
                json={"customer_id": cid, "context": {"placement": "campaign"}},
                headers=auth,
            )
            assert resp.status_code == 200, resp.text
            decisions.append(resp.json())
        out["decisions"] = used(r) - before
        out["contacts"] = sum(
            1
            for d in decisions
            if d["action"] and d["action"]["channel"] in ("email", "push", "sms")
        )
        before = used(r)
        for d in decisions:
            await c.post(
                "/feedback", json={"decision_id": d["decision_id"], "event": "opened"}, headers=auth
            )
        out["feedback"] = used(r) - before
    r.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--var-dir", type=Path, default=ROOT / "var")
    ap.add_argument("--models", type=Path, default=ROOT / "models")
    ap.add_argument("--decisions", type=int, default=10_000)
    a = ap.parse_args(argv)
    binary = redis_binary()
    if not binary:
        print("no redis-server binary", file=sys.stderr)
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="nextbest-sizing-"))
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        import pandas as pd
        import redis

        url = f"redis://127.0.0.1:{port}/0"
        r = redis.Redis.from_url(url)
        for _ in range(100):
            try:
                r.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        # the world from --var-dir; the Feast registry in the scratch folder (var/ untouched)
        os.environ["NEXTBEST_DATA_DIR"] = str((a.var_dir / "world").resolve())
        os.environ["NEXTBEST_VAR_DIR"] = str(tmp)
        os.environ["NEXTBEST_REDIS_URL"] = url
        os.environ.pop("REDIS_CONNECTION_STRING", None)
        os.environ.pop("NEXTBEST_REDIS_CLUSTER", None)
        from training.datasets.world import World
        from training.pipeline.featurestore import apply, materialize
        from training.settings import paths

        world = World.load(paths().data_dir)
        profiles = pd.read_parquet(paths().data_dir / "features" / "customer_profile.parquet")
        customers = int(profiles["customer_id"].nunique())
        base = used(r)
        t0 = time.perf_counter()
        apply("redis", url)
        materialize("redis", url, end=world.config.end_ts)
        features = used(r) - base
        materialize_s = time.perf_counter() - t0
        keys = int(r.dbsize())
        ids = (
            profiles["customer_id"]
            .drop_duplicates()
            .sample(min(a.decisions, customers), random_state=1)
        )
        traffic = asyncio.run(_traffic(url, a.models, tmp / "spool", [str(x) for x in ids]))
        n = len(ids)
        per = {
            "feature rows, per known customer": features / customers,
            "real-time state, per active customer": traffic["realtime"] / n,
            "decision (record + log entry + contact), per decision": traffic["decisions"] / n,
            "feedback (marker + log entry), per event": traffic["feedback"] / n,
        }
        result = {
            "redis_server": r.info("server")["redis_version"],
            "customers_materialized": customers,
            "keys_after_materialize": keys,
            "materialize_seconds": round(materialize_s, 1),
            "sampled_customers": n,
            "outbound_contacts_in_sample": traffic["contacts"],
            "bytes": {k: round(v, 1) for k, v in per.items()},
            "per_1M_customers_MiB": {
                "features": round(per["feature rows, per known customer"] * 1e6 / 2**20, 1),
                "features + real-time state for all": round(
                    (
                        per["feature rows, per known customer"]
                        + per["real-time state, per active customer"]
                    )
                    * 1e6
                    / 2**20,
                    1,
                ),
            },
            "per_1M_decisions_retained_MiB": round(
                per["decision (record + log entry + contact), per decision"] * 1e6 / 2**20, 1
            ),
            "per_1M_feedback_retained_MiB": round(
                per["feedback (marker + log entry), per event"] * 1e6 / 2**20, 1
            ),
        }
        print(json.dumps(result, indent=2))
        r.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
