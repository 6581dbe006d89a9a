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
    truth = pd.read_parquet(data_dir / "truth_customers.parquet")
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


def run_demo(base_url: str, data_dir: Path, headers: dict[str, str] | None = None) -> list[str]:
    people = pick_customers(data_dir)
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


def main() -> int:
    from training.settings import paths

    port = _free_port()
    env = {**os.environ, "NEXTBEST_PORT": str(port), "NEXTBEST_LOG_LEVEL": "WARNING"}
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
        for block in run_demo(base, paths().data):
            print(block)
        return 0
    finally:
        proc.terminate()
        proc.wait(timeout=15)


if __name__ == "__main__":
    raise SystemExit(main())
