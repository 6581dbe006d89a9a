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
   decision (decision marker, log stream entry, contact) and per feedback (idempotency
   marker + entry), as they sit in Redis before the exporter ran;
4. the log exporter drains the streams into Parquet (``service.exporter``, files in the
   scratch folder): bytes per decision *kept* in Redis afterwards (the decision's marker hash
   with its outcome fields, outcome-effect markers, for the feedback window; the contact)
   and bytes of Parquet per decision and outcome on disk.

Prints the figures, the 1M-customer projection, and what 1,000 decisions/s keep in Redis
over the feedback window (NEXTBEST_FEEDBACK_WINDOW_DAYS, default 7): the log itself leaves
Redis, so Redis grows with customers and the window, not with the log's age.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from ensure_redis import redis_binary  # noqa: E402

from loadtests.faults import RedisProcess  # noqa: E402


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
    if not redis_binary():
        print("no redis-server binary", file=sys.stderr)
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="nextbest-sizing-"))
    rp = RedisProcess(tmp, aof=False)
    try:
        rp.start()
        import pandas as pd
        import redis

        url = rp.url
        r = redis.Redis.from_url(url)
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
        from service.exporter import Exporter
        from service.exporter.__main__ import drain

        # what each kind of key kept for the feedback window costs (MEMORY USAGE, sampled)
        def per_key(pattern: str, limit: int = 300) -> tuple[int, float]:
            keys = []
            for k in r.scan_iter(match=pattern, count=1000):
                keys.append(k)
            sample = keys[:limit]
            mean = sum(int(r.memory_usage(k, samples=0) or 0) for k in sample) / max(len(sample), 1)
            return len(keys), mean

        n_dec, dec_bytes = per_key("nb:dec:*")
        n_fb, fb_bytes = per_key("nb:fb:*")
        n_fx, fx_bytes = per_key("nb:*:fx:*")
        contact_keys = list(r.scan_iter(match="nb:*:contacts", count=1000))
        members = sum(int(r.zcard(k)) for k in contact_keys)
        contact_bytes = sum(int(r.memory_usage(k, samples=0) or 0) for k in contact_keys)
        breakdown = {
            "decision_marker_hash_with_its_outcome_fields": {
                "keys": n_dec,
                "bytes_each": round(dec_bytes, 1),
            },
            "outcome_marker_key_of_earlier_versions": {
                "keys": n_fb,
                "bytes_each": round(fb_bytes, 1),
            },
            "outcome_effect_marker_key": {"keys": n_fx, "bytes_each": round(fx_bytes, 1)},
            "contact_history_member": {
                "members": members,
                "bytes_each": round(contact_bytes / max(members, 1), 1),
            },
        }
        before_export = used(r)
        log_root = tmp / "log"
        rows = drain(Exporter(r, str(log_root), flush_s=1.0, max_rows=200_000))
        exported = before_export - used(r)
        kept = (traffic["decisions"] + traffic["feedback"] - exported) / n
        disk = {
            kind: sum(p.stat().st_size for p in (log_root / kind).glob("**/*.parquet"))
            for kind in ("decisions", "feedback")
        }
        window_days = float(os.environ.get("NEXTBEST_FEEDBACK_WINDOW_DAYS", "7"))
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
            "kept_per_key_MEMORY_USAGE": breakdown,
            "after_export": {
                "rows_exported": rows,
                "bytes_freed_per_decision": round(exported / n, 1),
                "bytes_kept_per_decision_with_its_feedback": round(kept, 1),
                "feedback_window_days": window_days,
                "per_1000_decisions_per_s_over_window_GiB": round(
                    kept * 1000 * 86400 * window_days / 2**30, 2
                ),
                "parquet_bytes_per_decision": round(disk["decisions"] / n, 1),
                "parquet_bytes_per_feedback": round(disk["feedback"] / n, 1),
                "parquet_GiB_per_day_at_1000_decisions_per_s": round(
                    (disk["decisions"] + disk["feedback"]) / n * 1000 * 86400 / 2**30, 1
                ),
            },
        }
        print(json.dumps(result, indent=2))
        r.close()
    finally:
        rp.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
