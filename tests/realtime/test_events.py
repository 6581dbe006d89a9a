"""POST /events over HTTP (real Redis): auth, bounds, idempotency, ordering, identity."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient

from contracts.keys import (
    aliases_key,
    cart_key,
    decision_stream,
    link_key,
    purchased_key,
    realtime_window_key,
    sequence_instance_key,
)
from service.realtime.schemas import MAX_EVENTS
from service.realtime.state import RealtimeStore
from tests.realtime.conftest import AUTH, ts_iso

pytestmark = [pytest.mark.redis, pytest.mark.anyio]


def ev(eid: str, type_: str, ts: float, **kw: Any) -> dict[str, Any]:
    return {"event_id": eid, "type": type_, "timestamp": ts_iso(ts), **kw}


async def post(c: AsyncTestClient[Any], *events: dict[str, Any]) -> dict[str, Any]:
    resp = await c.post("/events", json={"events": list(events)}, headers=AUTH)
    assert resp.status_code == 200, resp.text
    out: dict[str, Any] = resp.json()
    return out


async def features(r: aioredis.Redis, unit: str) -> dict[str, float]:
    state = await RealtimeStore(r).read(unit)
    assert state.features is not None
    return state.features


async def test_events_need_a_key_and_a_bounded_batch(
    client_nomodels: AsyncTestClient[Any], uid: str
) -> None:
    one = ev(f"{uid}-1", "page_view", time.time(), customer_id=uid)
    resp = await client_nomodels.post("/events", json={"events": [one]})
    assert resp.status_code == 401
    too_many = [
        ev(f"{uid}-{i}", "page_view", time.time(), customer_id=uid) for i in range(MAX_EVENTS + 1)
    ]
    resp = await client_nomodels.post("/events", json={"events": too_many}, headers=AUTH)
    assert resp.status_code == 400
    resp = await client_nomodels.post(
        "/events", json={"events": [{**one, "type": "teleport"}]}, headers=AUTH
    )
    assert resp.status_code == 400


async def test_events_are_idempotent_by_event_id(
    client_nomodels: AsyncTestClient[Any], r: aioredis.Redis, uid: str
) -> None:
    now = time.time()
    add = ev(f"{uid}-a", "cart_add", now - 5, customer_id=uid, offer_id="OFF001", value=20.0)
    first = await post(client_nomodels, add)
    again = await post(client_nomodels, add, add)
    assert first["applied"] == 1 and again["duplicate"] == 2 and again["applied"] == 0
    f = await features(r, uid)
    assert f["cart_items_rt"] == 1 and f["cart_value_rt"] == pytest.approx(20.0)


async def test_out_of_order_events_do_not_change_the_cart(
    client_nomodels: AsyncTestClient[Any], r: aioredis.Redis, uid: str
) -> None:
    t = time.time() - 600
    out = await post(
        client_nomodels,
        ev(f"{uid}-2", "cart_add", t + 20, customer_id=uid, offer_id="OFF002", value=10.0),
        ev(f"{uid}-1", "cart_add", t + 10, customer_id=uid, offer_id="OFF001", value=5.0),
    )  # one batch: applied in timestamp order
    assert out["applied"] == 2
    late = await post(
        client_nomodels,
        ev(f"{uid}-0", "cart_remove", t, customer_id=uid, offer_id="OFF001"),
        ev(f"{uid}-v", "page_view", t + 1, customer_id=uid),
        ev(f"{uid}-p", "purchase", t + 2, customer_id=uid, offer_id="OFF009", value=9.0),
    )
    assert [x["status"] for x in late["results"]] == ["late", "late", "late"]
    f = await features(r, uid)
    assert f["cart_items_rt"] == 2  # the late remove and the late purchase left the cart alone
    assert f["session_views_1h"] == 1 and f["purchases_1h"] == 1  # windows count late events
    assert f["last_purchase_ts"] == int(t + 2)
    assert await r.sismember(purchased_key(uid), "OFF009")  # type: ignore[misc]
    done = await post(
        client_nomodels, ev(f"{uid}-3", "purchase", t + 30, customer_id=uid, value=15.0)
    )
    assert done["applied"] == 1
    assert (await features(r, uid))["cart_items_rt"] == 0


async def test_invalid_events_are_rejected_one_by_one(
    client_nomodels: AsyncTestClient[Any], uid: str
) -> None:
    now = time.time()
    out = await post(
        client_nomodels,
        ev(f"{uid}-f", "page_view", now + 3600, customer_id=uid),
        ev(f"{uid}-n", "page_view", now),
        ev(f"{uid}-c", "cart_add", now, customer_id=uid),
        ev(f"{uid}-i", "identify", now, customer_id=uid),
        ev(f"{uid}-ok", "app_open", now, customer_id=uid),
    )
    assert [x["status"] for x in out["results"]] == [
        "rejected", "rejected", "rejected", "rejected", "applied"
    ]  # fmt: skip


async def test_identify_links_both_ways_and_merges_the_cart(
    client_nomodels: AsyncTestClient[Any], r: aioredis.Redis, uid: str
) -> None:
    anon, cust = f"{uid}-anon", f"{uid}-cust"
    t = time.time() - 100
    await post(
        client_nomodels,
        ev(f"{uid}-1", "cart_add", t, anonymous_id=anon, offer_id="OFF003", value=30.0),
        ev(f"{uid}-2", "cart_add", t + 1, customer_id=cust, offer_id="OFF004", value=12.0),
        ev(f"{uid}-3", "purchase", t + 2, anonymous_id=anon, offer_id="OFF005"),
    )
    assert (await post(client_nomodels, ev(f"{uid}-id", "identify", t + 3,
                                          anonymous_id=anon, customer_id=cust)))["applied"] == 1  # fmt: skip
    again = await post(
        client_nomodels, ev(f"{uid}-id", "identify", t + 3, anonymous_id=anon, customer_id=cust)
    )
    assert again["duplicate"] == 1
    assert await r.get(link_key(anon)) == cust.encode()
    assert await r.smembers(aliases_key(cust)) == {anon.encode()}  # type: ignore[misc]
    # the anonymous purchase emptied the anonymous cart; it is in the customer's purchases
    f = await features(r, cust)
    assert f["cart_items_rt"] == 1 and f["purchases_1h"] == 1
    assert await r.sismember(purchased_key(cust), "OFF005")  # type: ignore[misc]
    # a second device's open cart moves to the customer at identify
    await post(
        client_nomodels,
        ev(f"{uid}-5", "cart_add", t + 3, anonymous_id=f"{anon}2", offer_id="OFF006", value=7.0),
    )
    await post(
        client_nomodels,
        ev(f"{uid}-id2", "identify", t + 3, anonymous_id=f"{anon}2", customer_id=cust),
    )
    f = await features(r, cust)
    assert f["cart_items_rt"] == 2 and f["cart_value_rt"] == pytest.approx(19.0)
    assert (await RealtimeStore(r).read(cust)).cart == {"OFF004": 1, "OFF006": 1}
    # later events for the anonymous id land on the customer
    await post(client_nomodels, ev(f"{uid}-4", "page_view", t + 4, anonymous_id=anon))
    assert (await features(r, cust))["session_views_1h"] == 1


async def test_decide_right_after_an_event_sees_it(
    client_nomodels: AsyncTestClient[Any], r: aioredis.Redis, uid: str
) -> None:
    """Within one second: /events returns after the write, /decide reads it (logged)."""
    now = time.time()
    await post(
        client_nomodels,
        ev(f"{uid}-1", "cart_add", now, customer_id=uid, offer_id="OFF001", value=20.0),
    )
    t0 = time.monotonic()
    resp = await client_nomodels.post(
        "/decide",
        json={"customer_id": uid, "context": {"placement": "home_banner"}},
        headers=AUTH,
    )
    assert resp.status_code == 200 and time.monotonic() - t0 < 1.0
    did = resp.json()["decision_id"]
    rows = await r.xrevrange(decision_stream(did), count=50)
    rec = next(json.loads(f[b"record"]) for _, f in rows if did.encode() in f[b"record"])
    assert rec["realtime"]["cart_items_rt"] == 1
    assert 0 <= rec["realtime"]["last_cart_add_age_s"] < 2
    # an anonymous id linked to the customer decides as the customer (allocation too)
    await post(
        client_nomodels,
        ev(f"{uid}-id", "identify", now, anonymous_id=f"{uid}-a", customer_id=uid),
    )
    by_anon = await client_nomodels.post(
        "/decide",
        json={"anonymous_id": f"{uid}-a", "context": {"placement": "home_banner"}},
        headers=AUTH,
    )
    by_cust = await client_nomodels.post(
        "/decide", json={"customer_id": uid, "context": {"placement": "home_banner"}},
        headers=AUTH,
    )  # fmt: skip
    assert by_anon.json()["arm"] == by_cust.json()["arm"]
    did = by_anon.json()["decision_id"]
    rows = await r.xrevrange(decision_stream(did), count=50)
    rec = next(json.loads(f[b"record"]) for _, f in rows if did.encode() in f[b"record"])
    assert rec["unit"] == uid and rec["known"] and rec["realtime"]["alias"] == f"{uid}-a"


async def test_cart_and_purchase_events_shape_the_next_decision(
    client_models: AsyncTestClient[Any], r: aioredis.Redis, small_world: Any, uid: str
) -> None:
    import pandas as pd

    prof = pd.read_parquet(small_world / "features" / "customer_profile.parquet")
    cid = str(prof["customer_id"].iloc[11])
    now = time.time()
    await post(
        client_models,
        ev(f"{uid}-1", "cart_add", now, customer_id=cid, offer_id="OFF003", value=30.0),
    )
    body = {"customer_id": cid, "context": {"placement": "home_banner"}}
    d = (await client_models.post("/decide", json=body, headers=AUTH)).json()
    rows = await r.xrevrange(decision_stream(d["decision_id"]), count=50)
    rec = next(
        json.loads(f[b"record"]) for _, f in rows if d["decision_id"].encode() in f[b"record"]
    )
    if "realtime" in rec:  # not for opted-out customers (their record holds only the call)
        assert rec["realtime"]["cart_categories"]  # the cart's category is boosted
    if d["action"]:
        bought = d["action"]["offer_id"]
        await post(
            client_models,
            ev(f"{uid}-2", "purchase", now + 0.5, customer_id=cid, offer_id=bought),
        )
        again = (await client_models.post("/decide", json=body, headers=AUTH)).json()
        assert again["action"] is None or again["action"]["offer_id"] != bought
        assert any(
            s["offer_id"] == bought and s["detail"] == "already purchased"
            for s in again["suppressed"]
        )


async def test_event_times_outside_the_idempotency_window_are_rejected(
    client_nomodels: AsyncTestClient[Any], uid: str
) -> None:
    """Issue 14.7: an event timestamp of 0 was accepted (as 1970)."""
    zero = {"event_id": f"{uid}-0", "type": "page_view", "customer_id": uid, "timestamp": 0}
    resp = await client_nomodels.post("/events", json={"events": [zero]}, headers=AUTH)
    assert resp.status_code == 400 and resp.json()["field"] == "events[0].timestamp"
    now = time.time()
    out = await post(
        client_nomodels,
        {**zero, "timestamp": "1970-01-01T00:00:00Z"},
        ev(f"{uid}-8d", "page_view", now - 8 * 86400, customer_id=uid),
        ev(f"{uid}-6d", "page_view", now - 6 * 86400, customer_id=uid),
    )
    assert [x["status"] for x in out["results"]] == ["rejected", "rejected", "applied"]
    assert "idempotency window" in out["results"][0]["detail"]


async def test_opted_out_customer_events_are_not_collected(
    client_nomodels: AsyncTestClient[Any],
    r: aioredis.Redis,
    uid: str,
    redis_store: Any,
    small_world: Path,
) -> None:
    """Issue 14.6: /events stored an opted-out customer's cart and page views and started an
    abandoned-cart sequence for them."""
    truth = pd.read_parquet(small_world / "truth" / "truth_customers.parquet")
    known = truth[~truth["anonymous"]]
    out_id = str(known.loc[known["opted_out"], "customer_id"].iloc[1])
    in_id = str(known.loc[~known["opted_out"], "customer_id"].iloc[1])
    t = time.time() - 60
    for cid in (out_id, in_id):
        got = await post(
            client_nomodels,
            ev(f"{uid}-{cid}-c", "cart_add", t, customer_id=cid, offer_id="OFF001", value=9.0),
            ev(f"{uid}-{cid}-v", "page_view", t + 1, customer_id=cid),
        )
        status = "skipped" if cid == out_id else "applied"
        assert [x["status"] for x in got["results"]] == [status, status], got
    assert got["applied"] == 2
    # the consenting customer's cart, views and sequence exist; nothing of the opted-out one
    assert await r.exists(cart_key(in_id), realtime_window_key(in_id, "views")) == 2
    assert await r.exists(sequence_instance_key("abandoned_cart", in_id)) == 1
    assert await r.exists(cart_key(out_id), realtime_window_key(out_id, "views")) == 0
    assert await r.exists(sequence_instance_key("abandoned_cart", out_id)) == 0
    assert (await RealtimeStore(r).read(out_id)).features is None
    # a visitor who turns out to be the opted-out customer: linked, the anonymous cart dropped
    anon = f"{uid}-anon"
    await post(
        client_nomodels,
        ev(f"{uid}-a", "cart_add", t, anonymous_id=anon, offer_id="OFF002", value=5.0),
    )
    linked = await post(
        client_nomodels, ev(f"{uid}-id", "identify", t + 2, anonymous_id=anon, customer_id=out_id)
    )
    assert linked["results"][0]["status"] == "skipped"
    assert await r.get(link_key(anon)) == out_id.encode()
    assert await r.exists(cart_key(anon), cart_key(out_id)) == 0
    later = await post(client_nomodels, ev(f"{uid}-lv", "page_view", t + 3, anonymous_id=anon))
    assert later["skipped"] == 1 and await r.exists(realtime_window_key(out_id, "views")) == 0
