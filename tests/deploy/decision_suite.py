"""The decision tests every deployment must pass, over HTTP against running service processes.

A deployment is one or more replicas (base URLs) sharing one Redis (a single server or a
Redis Cluster). Requests go round-robin over the replicas, like a load balancer, so the same
customer is served by different processes within one check:

* readiness and the same model versions on every replica;
* a known customer's decision, with features read from Feast's layout, logged once;
* the experiment arm of a customer is the same on every replica;
* opted-out and holdout customers;
* frequency caps hold under concurrent requests spread over the replicas (push 1/24 h,
  email 2/168 h), and the contact history holds exactly the contacts that were given;
* feedback is idempotent across replicas and a conversion excludes the offer;
* events: an anonymous cart, ``identify`` on another replica, then a decision for the
  anonymous id is made as the customer (merged state, the customer's arm);
* a due sequence step fires exactly once although every replica runs a scheduler;
* every decision returned is in the decision log exactly once, none degraded.

The test modules (test_redis_cluster.py, test_replicas.py, test_mlflow_postgres.py) build a
:class:`Deployment` and run :data:`CHECKS` in order.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from contracts.keys import (
    ACTIONS_STREAM,
    SEQUENCE_LOG,
    aliases_key,
    cart_key,
    contacts_key,
    decision_stream,
    feedback_stream,
    link_key,
)
from contracts.keys import realtime_state_key as state_key
from contracts.keys import sequence_instance_key as instance_key
from service.adapters.redis_store import read_decisions
from service.domain.allocation import allocate
from service.domain.config import load_policy
from tests.deploy.conftest import API_KEY

AUTH = {"Authorization": f"Bearer {API_KEY}"}
NOW = "2026-11-16T09:00:00Z"
BAD_DEGRADED = {"redis_unavailable", "log_spooled", "contact_reservation_failed"}


@dataclass
class Deployment:
    name: str
    bases: list[str]
    r: Any  # a blocking client: redis.Redis or redis.RedisCluster
    people: dict[str, Any]
    decisions: list[dict[str, Any]] = field(default_factory=list)

    def clear(self, *units: str) -> None:
        """Forget what earlier runs left for these customers (contacts, cart, sequences)."""
        for u in units:
            for key in (
                contacts_key(u),
                f"nb:{{{u}}}:purchased",
                cart_key(u),
                state_key(u),
                aliases_key(u),
                *(f"nb:{{{u}}}:rt:{k}" for k in ("views", "purchases", "opens")),
            ):
                self.r.delete(key)
            self.r.delete(instance_key("abandoned_cart", u))


class Api:
    """Round-robin over the replicas; remembers every decision it saw."""

    def __init__(self, dep: Deployment) -> None:
        self.dep = dep
        self.clients = [httpx.AsyncClient(base_url=b, timeout=30) for b in dep.bases]
        self._next = itertools.cycle(range(len(self.clients)))

    async def __aenter__(self) -> Api:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for c in self.clients:
            await c.aclose()

    async def burst(self, path: str, body: dict[str, Any], n: int) -> list[dict[str, Any]]:
        """``n`` identical requests, as close together as a client can send them.

        Connections are opened first (spread round-robin), then every request is written in
        one tight loop: the requests overlap inside the servers, and several read the
        customer's contact history before another one's reservation is committed, so the caps
        rest on the atomic reservation in Redis. (Checked by mutation: with the reservation
        script's cap test disabled, the cap checks below fail.)
        """
        raw = json.dumps(body).encode()
        conns = []
        for i in range(n):
            url = httpx.URL(self.dep.bases[i % len(self.dep.bases)])
            conns.append(await asyncio.open_connection(url.host, url.port))
        head = (
            f"POST {path} HTTP/1.1\r\nHost: nextbest\r\nAuthorization: {AUTH['Authorization']}"
            f"\r\nContent-Type: application/json\r\nContent-Length: {len(raw)}"
            "\r\nConnection: close\r\n\r\n"
        ).encode()
        for _, writer in conns:
            writer.write(head + raw)
        await asyncio.gather(*[w.drain() for _, w in conns])
        replies = await asyncio.gather(*[reader.read() for reader, _ in conns])
        for _, writer in conns:
            writer.close()
        outs = []
        for reply in replies:
            status, out = _parse_http(reply)
            assert status == 200, reply[:500]
            self.dep.decisions.append(out)
            outs.append(out)
        return outs

    def client(self, replica: int | None) -> httpx.AsyncClient:
        i = next(self._next) if replica is None else replica % len(self.clients)
        return self.clients[i]

    async def post(self, path: str, body: Any, replica: int | None = None) -> httpx.Response:
        return await self.client(replica).post(path, json=body, headers=AUTH)

    async def decide(self, replica: int | None = None, **body: Any) -> dict[str, Any]:
        body.setdefault("context", {"placement": "campaign"})
        resp = await self.post("/decide", body, replica)
        assert resp.status_code == 200, resp.text
        out: dict[str, Any] = resp.json()
        self.dep.decisions.append(out)
        return out


def _parse_http(reply: bytes) -> tuple[int, dict[str, Any]]:
    """(status, JSON body) of one HTTP/1.1 response read to EOF (length or chunked body)."""
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    if headers.get("transfer-encoding") == "chunked":
        out, rest = b"", body
        while True:
            size_s, _, rest = rest.partition(b"\r\n")
            size = int(size_s.split(b";")[0], 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2 :]
        body = out
    return status, json.loads(body)


def find_record(r: Any, decision_id: str) -> dict[str, Any]:
    for _, fields in r.xrevrange(decision_stream(decision_id), count=500):
        rec: dict[str, Any] = json.loads(fields[b"record"])
        if rec["decision_id"] == decision_id:
            return rec
    raise AssertionError(f"decision {decision_id} not in the decision log")


def ev(type_: str, ts: float, **kw: Any) -> dict[str, Any]:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + "Z"
    return {"event_id": uuid.uuid4().hex, "type": type_, "timestamp": stamp, **kw}


# ------------------------------------------------------------------------------- checks
async def ready_with_the_same_models_everywhere(dep: Deployment) -> None:
    seen = []
    async with httpx.AsyncClient(timeout=30) as c:
        for base in dep.bases:
            ready = await c.get(f"{base}/ready")
            assert ready.status_code == 200 and ready.json()["ready"], ready.text
            models = (await c.get(f"{base}/models")).json()["loaded"]
            seen.append({k: m["version"] for k, m in models["models"].items()})
    assert set(seen[0]) == {"propensity", "send_time", "channel"}
    assert all(s == seen[0] for s in seen), seen


async def known_customer_is_decided_with_features_and_logged(dep: Deployment) -> None:
    async with Api(dep) as api:
        for cid in dep.people["treated"][:3]:
            d = await api.decide(customer_id=cid, now=NOW, explain=True)
            assert not d["cold_start"] and d["feature_age_seconds"] is not None, d
            assert len(d["model_versions"]) == 3 and d["explain"]["channel_scores"]
            rec = find_record(dep.r, d["decision_id"])
            assert rec["unit"] == cid and rec["arm"] == d["arm"]


async def arm_is_the_same_on_every_replica(dep: Deployment) -> None:
    exp = load_policy().experiments
    async with Api(dep) as api:
        for cid in list(dep.people["arms"])[:6]:
            arms = {
                (await api.decide(replica=i, customer_id=cid, now=NOW))["arm"]
                for i in range(len(dep.bases))
            }
            assert arms == {allocate(exp, cid).arm}, (cid, arms)


async def opted_out_and_holdout(dep: Deployment) -> None:
    async with Api(dep) as api:
        d = await api.decide(customer_id=dep.people["opted_out"], now=NOW)
        assert d["action"] is None and d["suppressed"][0]["reason"] == "no_consent"
        h = await api.decide(customer_id=dep.people["holdout"], now=NOW)
        assert h["arm"] == "holdout" and h["holdout"] and h["action"] is None


async def _cap_burst(dep: Deployment, channel: str, placement: str, cap: int) -> None:
    async with Api(dep) as api:
        cid = None
        for cand in dep.people[channel]:  # a customer the model would contact on `channel`
            dep.clear(cand)
            probe = await api.decide(customer_id=cand, context={"placement": placement}, now=NOW)
            if probe["action"] and probe["action"]["channel"] == channel:
                cid = cand
                break
        assert cid is not None, f"no customer in the sample gets {channel} at {NOW}"
        dep.clear(cid)
        body = {"customer_id": cid, "context": {"placement": placement}, "now": NOW}
        outs = await api.burst("/decide", body, 24)
    given = [d for d in outs if d["action"] and d["action"]["channel"] == channel]
    assert 1 <= len(given) <= cap, f"{len(given)} {channel} contacts given, cap {cap}"
    reasons = {s["reason"] for d in outs for s in d["suppressed"]}
    assert "frequency_cap" in reasons
    members = [m.decode().split("|") for m in dep.r.zrange(contacts_key(cid), 0, -1)]
    assert sorted(m[2] for m in members if m[1] == channel) == sorted(
        d["decision_id"] for d in given
    )


async def push_cap_holds_across_replicas(dep: Deployment) -> None:
    await _cap_burst(dep, "push", "push_batch", 1)


async def email_cap_holds_across_replicas(dep: Deployment) -> None:
    await _cap_burst(dep, "email", "email", 2)


async def feedback_is_idempotent_across_replicas(dep: Deployment) -> None:
    async with Api(dep) as api:
        d = None
        for cid in dep.people["treated"][3:]:
            dep.clear(cid)
            d = await api.decide(customer_id=cid, context={"placement": "home_banner"}, now=NOW)
            if d["action"]:
                break
        assert d is not None and d["action"], "no treated customer got a banner"
        offer = d["action"]["offer_id"]
        body = {"decision_id": d["decision_id"], "event": "converted", "value": 30.0}
        first = await api.post("/feedback", body, replica=0)
        again = await api.post("/feedback", body, replica=1)
        assert first.json()["status"] == "accepted", first.text
        assert again.json()["status"] == "duplicate", again.text
        stream = feedback_stream(d["decision_id"])
        mine = [
            f
            for _, f in dep.r.xrevrange(stream, count=500)
            if json.loads(f[b"record"]).get("decision_id") == d["decision_id"]
        ]
        assert len(mine) == 1
        nxt = await api.decide(
            replica=1, customer_id=cid, context={"placement": "home_banner"}, now=NOW
        )
        assert nxt["action"] is None or nxt["action"]["offer_id"] != offer
        assert any(
            s["offer_id"] == offer and s["reason"] == "ineligible" for s in nxt["suppressed"]
        )


async def anonymous_cart_follows_identify_across_replicas(dep: Deployment) -> None:
    cid = dep.people["events"][0]
    anon = f"anon-{uuid.uuid4().hex[:12]}"
    dep.clear(cid)
    now = time.time()
    async with Api(dep) as api:
        add = ev("cart_add", now - 600, anonymous_id=anon, offer_id="OFF003", value=25.0)
        out = (await api.post("/events", {"events": [add]}, replica=0)).json()
        assert out["applied"] == 1, out
        ident = ev("identify", now - 500, anonymous_id=anon, customer_id=cid)
        out = (await api.post("/events", {"events": [ident]}, replica=1)).json()
        assert out["applied"] == 1, out
        assert dep.r.get(link_key(anon)) == cid.encode()
        d = await api.decide(replica=0, anonymous_id=anon)
    rec = find_record(dep.r, d["decision_id"])
    assert rec["unit"] == cid and rec["known"], rec
    assert rec["realtime"]["alias"] == anon and rec["realtime"]["cart_items_rt"] == 1, rec
    assert d["arm"] == allocate(load_policy().experiments, cid).arm


async def due_sequence_step_fires_once(dep: Deployment) -> None:
    cid = dep.people["events"][1]
    dep.clear(cid)
    now = time.time()
    async with Api(dep) as api:
        add = ev("cart_add", now - 7200, customer_id=cid, offer_id="OFF005", value=40.0)
        out = (await api.post("/events", {"events": [add]})).json()
        assert out["applied"] == 1, out

    def outcomes() -> list[dict[str, Any]]:
        rows = [json.loads(f[b"record"]) for _, f in dep.r.xrevrange(SEQUENCE_LOG, count=2000)]
        return [x for x in rows if x["unit"] == cid and x["ts"] >= now - 5]

    deadline = time.monotonic() + 30
    while not outcomes() and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    first = outcomes()
    assert first, f"no scheduler ran the due step of {cid} within 30 s"
    await asyncio.sleep(2.0)  # several polls of every replica's scheduler
    rows = outcomes()
    steps = Counter((x["instance"], x["step"]) for x in rows)
    assert steps == Counter({(first[0]["instance"], 0): 1}), rows
    action_id = f"{first[0]['instance']}:0"
    actions = [
        f
        for _, f in dep.r.xrevrange(ACTIONS_STREAM, count=2000)
        if f[b"action_id"] == action_id.encode()
    ]
    assert len(actions) == (1 if first[0]["outcome"] == "fired" else 0), rows


async def every_decision_is_logged_once(dep: Deployment) -> None:
    assert dep.decisions, "the suite made no decision"
    ids = [d["decision_id"] for d in dep.decisions]
    assert len(set(ids)) == len(ids)
    counts = Counter(rec.decision_id for rec in read_decisions(dep.r))
    missing = [i for i in ids if counts[i] != 1]
    assert not missing, f"{len(missing)} of {len(ids)} decisions not logged exactly once"
    bad = [d["degraded"] for d in dep.decisions if BAD_DEGRADED & set(d["degraded"])]
    assert not bad, bad


Check = Callable[[Deployment], Awaitable[None]]
CHECKS: list[Check] = [
    ready_with_the_same_models_everywhere,
    known_customer_is_decided_with_features_and_logged,
    arm_is_the_same_on_every_replica,
    opted_out_and_holdout,
    push_cap_holds_across_replicas,
    email_cap_holds_across_replicas,
    feedback_is_idempotent_across_replicas,
    anonymous_cart_follows_identify_across_replicas,
    due_sequence_step_fires_once,
    every_decision_is_logged_once,  # last: it checks every decision the others made
]
