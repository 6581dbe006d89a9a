"""`python -m service.demo`: start the service, ask it for decisions for contrasting customers.

Picks real customers of the generated world by their latent traits (an early riser who
prefers push, an opted-out customer, a holdout member, one pushed to their frequency cap)
plus a brand-new customer and an anonymous visitor, prints each decision with its reasons,
then stops the server. Needs the features materialized into Redis and a model bundle.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

from service.domain.allocation import allocate
from service.domain.config import load_policy

__all__ = ["main", "pick_customers", "run_demo"]

DEMO_NOW = "2026-11-16T09:00:00Z"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pick_customers(data_dir: Path) -> dict[str, str]:
    truth = pd.read_parquet(data_dir / "truth" / "truth_customers.parquet")
    exp = load_policy().experiments
    known = truth[~truth["anonymous"] & ~truth["opted_out"]].copy()
    known["arm"] = [allocate(exp, c).arm for c in known["customer_id"]]
    treated = known[known["arm"] == "model"]
    resp = treated[[f"resp_{c}" for c in ("email", "push", "sms", "in_app", "web")]]
    early_push = treated[
        (treated["hour_profile"] == "early_riser")
        & (resp.idxmax(axis=1) == "resp_push")
        & treated["consent_push"]
        & (treated["lifecycle"] == "active")
    ]
    capped = treated[treated["consent_push"] & treated["consent_email"]]
    return {
        "abandoned-cart customer": str(capped["customer_id"].iloc[-2]),
        "early riser who prefers push": str(early_push["customer_id"].iloc[0]),
        "opted-out customer": str(
            truth.loc[truth["opted_out"] & ~truth["anonymous"], "customer_id"].iloc[0]
        ),
        "holdout member": str(known.loc[known["arm"] == "holdout", "customer_id"].iloc[0]),
        "customer at their frequency cap": str(capped["customer_id"].iloc[-1]),
    }


def _summary(label: str, body: dict[str, Any]) -> str:
    a = body.get("action")
    lines = [f"\n== {label}"]
    lines.append(
        f"   arm={body['arm']} holdout={body['holdout']} cold_start={body['cold_start']} "
        f"degraded={body['degraded'] or '-'} feature_age_s={body['feature_age_seconds']}"
    )
    if a:
        lines.append(
            f"   ACTION  {a['offer_id']} ({a['offer_name']}) by {a['channel']} at {a['send_at']}"
            f"  EV={a['expected_value']:.3f}  p(convert)={a['probability']:.4f}"
        )
        for alt in body["alternatives"][:2]:
            lines.append(
                f"   next    {alt['offer_id']} by {alt['channel']}  EV={alt['expected_value']:.3f}"
            )
    else:
        lines.append("   ACTION  none")
    reasons: dict[str, list[str]] = {}
    for s in body["suppressed"]:
        what = s.get("channel") or s.get("offer_id") or "-"
        reasons.setdefault(s["reason"], []).append(what)
    for reason, whats in reasons.items():
        shown = ", ".join(sorted(set(whats))[:6])
        lines.append(f"   suppressed[{reason}]: {shown}")
    return "\n".join(lines)


def reset_demo_customers(redis_url: str, customers: list[str]) -> None:
    """Forget the demo customers' contacts and purchases, so every run shows the same story
    (the demo's decisions count against caps like any other). Nobody else is touched."""
    import redis

    from contracts.keys import contacts_key, purchased_key, sequence_instance_key

    r = redis.Redis.from_url(redis_url)
    for cid in customers:
        r.delete(
            contacts_key(cid), purchased_key(cid), sequence_instance_key("abandoned_cart", cid)
        )


def run_demo(
    base_url: str,
    data_dir: Path,
    headers: dict[str, str] | None = None,
    redis_url: str | None = None,
) -> list[str]:
    people = pick_customers(data_dir)
    if redis_url is not None:
        reset_demo_customers(redis_url, list(people.values()))
    out: list[str] = []
    with httpx.Client(base_url=base_url, headers=headers or {}, timeout=10) as http:

        def decide(body: dict[str, Any]) -> dict[str, Any]:
            r = http.post("/decide", json={"now": DEMO_NOW, **body})
            r.raise_for_status()
            result: dict[str, Any] = r.json()
            return result

        campaign = {"context": {"placement": "campaign"}}
        for label in ("early riser who prefers push", "opted-out customer", "holdout member"):
            out.append(
                _summary(
                    f"{label} ({people[label]})", decide({"customer_id": people[label], **campaign})
                )
            )
        out.append(
            _summary(
                "brand-new customer (no history), on the home page with a cart",
                decide(
                    {
                        "customer_id": "C_BRAND_NEW_1",
                        "context": {"placement": "home_banner", "cart_items": ["OFF001"]},
                    }
                ),
            )
        )
        out.append(
            _summary(
                "anonymous visitor, app screen",
                decide({"anonymous_id": "anon-42", "context": {"placement": "app_screen"}}),
            )
        )
        cid = people["customer at their frequency cap"]
        first = decide({"customer_id": cid, "context": {"placement": "push_batch"}})
        out.append(_summary(f"customer {cid}: first push of the day", first))
        again = decide({"customer_id": cid, "context": {"placement": "campaign"}, "explain": True})
        out.append(_summary(f"customer at their frequency cap ({cid}): asked again", again))
    return out


def _event(kind: str, cid: str, ts: float, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": f"demo-{kind}-{cid}-{time.time_ns()}",
        "type": kind,
        "customer_id": cid,
        "timestamp": datetime.fromtimestamp(ts, UTC).isoformat(),
        **extra,
    }


def run_realtime_demo(
    base_url: str, data_dir: Path, redis_url: str, headers: dict[str, str] | None = None
) -> list[str]:
    """Events in, features updated at once; an abandoned cart fires, is delivered, and ends.

    Real time (the wall clock): the cart of the sequence customer is dated 61 minutes ago,
    so the sequence's first step (wait 1 h) is due as soon as it starts.
    """
    import redis

    from contracts.keys import SEQUENCE_LOG, sequence_instance_key
    from contracts.records import ActionRecord, decode_sequence_step
    from service.delivery import DeliveryWorker

    people = pick_customers(data_dir)
    out: list[str] = ["\n== real time: events, features within a second, an abandoned cart"]
    r = redis.Redis.from_url(redis_url)
    with httpx.Client(base_url=base_url, headers=headers or {}, timeout=10) as http:
        cid = people["early riser who prefers push"]
        t0 = time.perf_counter()
        ev = http.post("/events", json={"events": [
            _event("cart_add", cid, time.time(), offer_id="OFF004", value=49.0)]})  # fmt: skip
        ev.raise_for_status()
        t1 = time.perf_counter()
        d = http.post(
            "/decide",
            json={"customer_id": cid, "context": {"placement": "home_banner"}, "explain": True},
        ).json()
        t2 = time.perf_counter()
        rt = (d.get("explain") or {}).get("realtime") or {}
        a = d.get("action") or {}
        out.append(
            f"   {cid}: cart_add OFF004 acknowledged in {(t1 - t0) * 1000:.1f} ms; /decide "
            f"{(t2 - t1) * 1000:.1f} ms later sees cart_items_rt={rt.get('cart_items_rt')}, "
            f"cart categories {rt.get('cart_categories')}, last cart add "
            f"{rt.get('last_cart_add_age_s')} s ago -> {a.get('offer_id')} on {a.get('channel')}"
        )

        sid = people["abandoned-cart customer"]
        start: Any = r.xrevrange(SEQUENCE_LOG, count=1)
        last_id = start[0][0] if start else b"0-0"
        http.post("/events", json={"events": [
            _event("cart_add", sid, time.time() - 61 * 60, offer_id="OFF007", value=89.0)]}
        ).raise_for_status()  # fmt: skip
        out.append(f"   {sid}: cart_add OFF007 dated 61 min ago starts `abandoned_cart`")
        step = None
        deadline = time.monotonic() + 15
        while step is None and time.monotonic() < deadline:
            time.sleep(0.2)  # the scheduler polls every NEXTBEST_SCHEDULER_POLL_S (1 s)
            rows: Any = r.xrange(SEQUENCE_LOG, min=f"({last_id.decode()}", max="+")
            for _, fields in rows:
                rec = decode_sequence_step(fields[b"record"])
                if rec.unit == sid:
                    step = rec
        if step is None:
            out.append("   the scheduler did not run the step within 15 s (is it enabled?)")
            return out
        out.append(
            f"   step {step.step} ran by the in-service scheduler: {step.outcome} "
            f"(arm {step.arm}, {step.channel or '-'}, {step.offer_id or '-'}"
            + (f", suppressed {step.suppressed}" if step.suppressed else "")
            + ")"
        )
        delivered: list[ActionRecord] = []
        worker = DeliveryWorker(r, "demo", send=delivered.append)
        worker.run_once(block_ms=None)
        for act in delivered:
            if act.unit == sid:
                out.append(
                    f"   delivery worker took action {act.action_id} from nb:actions: "
                    f"{act.offer_id} by {act.channel} at {act.send_at}"
                )
        pending = r.exists(sequence_instance_key("abandoned_cart", sid))
        out.append(f"   next step (in 24 h) scheduled: {bool(pending)}")
        http.post("/events", json={"events": [
            _event("purchase", sid, time.time(), offer_id="OFF007", value=89.0)]}
        ).raise_for_status()  # fmt: skip
        gone = not r.exists(sequence_instance_key("abandoned_cart", sid))
        out.append(f"   purchase event -> sequence ended at once: {gone}")
    return out


def main() -> int:
    from contracts.settings import Settings
    from service.localkeys import ensure_local_keys

    data_dir = Settings.from_env().paths.data_dir
    keys = ensure_local_keys()
    port = _free_port()
    env = {**os.environ, "NEXTBEST_PORT": str(port), "NEXTBEST_LOG_LEVEL": "WARNING", **keys.env()}
    env.pop("NEXTBEST_DEV_MODE", None)  # the demo runs with authentication on
    proc = subprocess.Popen([sys.executable, "-m", "service"], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"{base}/ready", timeout=1)
                if r.status_code == 200:
                    break
                if time.monotonic() > deadline:
                    print(f"service not ready: {r.text}", file=sys.stderr)
                    return 1
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    print("service did not start", file=sys.stderr)
                    return 1
            time.sleep(0.3)
        models = httpx.get(f"{base}/models").json()["loaded"]["models"]
        print(
            f"\nService up on {base}; models: "
            + json.dumps({k: v["version"] for k, v in models.items()})
        )
        auth = {"Authorization": f"Bearer {keys.api_key}"}
        redis_url = os.environ.get("NEXTBEST_REDIS_URL", "redis://127.0.0.1:6379/0")
        for block in run_demo(base, data_dir, auth, redis_url):
            print(block)
        for line in run_realtime_demo(base, data_dir, redis_url, auth):
            print(line)
        print(
            f"\nYour local API key is in {keys.api_keys_file.parent}/api-key; "
            "`make serve` starts the service with it."
        )
        return 0
    finally:
        proc.terminate()
        proc.wait(timeout=15)


if __name__ == "__main__":
    raise SystemExit(main())
