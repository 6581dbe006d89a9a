"""Policy simulator on the small generated world: in-process and over (mocked) HTTP."""

from __future__ import annotations

import json
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from contracts.vocabulary import DEFAULT_CHANNELS as CHANNELS
from training import simulation as simulate
from training.datasets.world import World


@pytest.fixture(scope="module")
def world(small_world: Path) -> World:
    return World.load(small_world)


def _response(world: World, cust: int, offer: int, ch: int, hour: int, arm: str) -> dict[str, Any]:
    tz = timezone(timedelta(hours=int(world.tz_offset[cust])))
    day = simulate.decision_time(world).astimezone(tz).replace(minute=0, second=0)
    send_at = (day.replace(hour=hour) + timedelta(days=1)).isoformat()
    action = None
    if arm != "holdout" and offer >= 0:
        action = {"offer_id": str(world.offers["offer_id"].iloc[offer]),
                  "channel": CHANNELS[ch], "send_at": send_at}  # fmt: skip
    return {"arm": arm, "holdout": arm == "holdout", "action": action}


def test_oracle_is_restricted_and_best(world: World) -> None:
    cust = simulate.sample_customers(world, 300, seed=1)
    assert not world.anonymous[cust].any()
    at = simulate.decision_time(world)
    offers = simulate.valid_offers(world, at)
    assert len(offers) == len(world.offers) - 2  # OFF019, OFF020 outside their window
    o, ch, h = simulate.restricted_oracle(world, cust, offers)
    assert set(o[o >= 0]) <= set(offers.tolist())
    has = o >= 0
    assert world.consent[cust[has], ch[has]].all()
    best = world.expected_revenue(cust[has], o[has], ch[has], h[has])
    quiet = simulate.quiet_mask()
    assert quiet[CHANNELS.index("push"), 3] and not quiet[CHANNELS.index("web"), 3]
    qo, qch, qh = simulate.restricted_oracle(world, cust, offers, quiet=quiet)
    assert not quiet[qch[qo >= 0], qh[qo >= 0].astype(int)].any()  # never in quiet hours
    q_best = world.expected_revenue(cust[has], qo[has], qch[has], qh[has])
    assert (q_best <= best + 1e-12).all() and q_best.mean() < best.mean()
    rng = np.random.default_rng(0)
    for _ in range(20):  # no random valid alternative beats it
        ro = offers[rng.integers(0, len(offers), has.sum())]
        rc = rng.integers(0, 5, has.sum())
        rh = rng.integers(0, 24, has.sum()).astype(float)
        assert (world.expected_revenue(cust[has], ro, rc, rh) <= best + 1e-12).all()


def test_inprocess_oracle_policy_scores_one(world: World, small_world: Path) -> None:
    cust = simulate.sample_customers(world, 400, seed=2)
    offers = simulate.valid_offers(world, simulate.decision_time(world))
    o, ch, h = simulate.restricted_oracle(world, cust, offers)
    plan = {str(world.customer_ids[c]): (i, c) for i, c in enumerate(cust)}

    def decide(cid: str, now: str) -> dict[str, Any] | None:
        i, c = plan[cid]
        arm = "holdout" if i % 20 == 0 else "model"
        return _response(world, int(c), int(o[i]), int(ch[i]), int(h[i]), arm)

    res = simulate.simulate_inprocess(world, cust, decide, data_dir=small_world)
    t = res.table.set_index("policy")
    assert t.loc["arm model: ours", "revenue vs oracle"] == pytest.approx(1.0)
    assert t.loc["arm model: ours", "n"] == 380
    assert t.loc["arm model: oracle (margin)", "margin vs oracle"] == pytest.approx(1.0)
    # the revenue oracle is not the margin oracle (offers' margins differ)
    assert t.loc["arm model: ours", "margin vs oracle"] < 1.0
    assert t.loc["holdout arm: realised (no message)", "n"] == 20
    assert t.loc["holdout arm: realised (no message)", "revenue / 1k"] == 0
    assert t.loc["arm model: random", "revenue vs oracle"] < 0.5
    assert 0 < t.loc["arm model: popular by email at 10:00", "revenue vs oracle"] < 1
    paired = res.paired.set_index("reference")
    assert paired.loc["oracle (revenue)", "revenue / 1k"] == pytest.approx(0.0, abs=1e-9)
    assert paired.loc["random", "revenue / 1k CI"][0] > 0  # the oracle beats random, paired CI
    assert paired.loc["random", "conversions / 1k CI"][0] > 0
    assert "arm model: ours" in res.render()
    # the oracle's own actions lose nothing to any swap; the traits-only ceiling is below it
    at = simulate.decision_time(world)
    gap = simulate.decompose_gap(world, cust, res.per_customer, at, "model", "revenue")
    assert gap["ours"] == pytest.approx(1.0)
    for k in ("oracle's offer, our channel and hour", "our offer, best channel and hour for it",
              "our offer and channel, best hour"):  # fmt: skip
        assert gap[k] == pytest.approx(1.0), k
    assert 0.5 < gap["oracle without per-offer taste (ceiling)"] < 1.0
    assert 0.5 < gap["its offer, our channel and hour"] < 1.0
    assert "ceiling, channel inferred from the history" not in gap  # no history given
    history = simulate.load_history(small_world)
    hist_gap = simulate.decompose_gap(
        world, cust, res.per_customer, at, "model", "revenue", history=history
    )
    assert (
        0.5
        < hist_gap["ceiling, channel inferred from the history"]
        < hist_gap["oracle without per-offer taste (ceiling)"]
    )
    # a random offer on the oracle's channel and hour: only the offer swap recovers the value
    rng = np.random.default_rng(0)
    worse = res.per_customer.assign(offer=offers[rng.integers(0, len(offers), len(cust))])
    g2 = simulate.decompose_gap(world, cust, worse, at, "model", "revenue")
    assert g2["ours"] < 0.7 and g2["oracle's offer, our channel and hour"] == pytest.approx(1.0)


def test_http_with_retries_and_errors(world: World) -> None:
    cust = simulate.sample_customers(world, 200, seed=3)
    calls: dict[str, int] = {}
    index = {str(world.customer_ids[c]): int(c) for c in cust}

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        cid = body["customer_id"]
        assert request.headers["authorization"] == "Bearer k"
        assert body["context"] == {"placement": "campaign"} and body["now"].endswith("+00:00")
        calls[cid] = calls.get(cid, 0) + 1
        c = index[cid]
        if c % 7 == 0 and calls[cid] == 1:
            return httpx.Response(503)  # retried once
        if c % 50 == 1:
            return httpx.Response(500)  # fails twice: an error
        return httpx.Response(200, json=_response(world, c, 0, 4, 12, "model"))

    res = simulate.simulate_http(
        world,
        cust,
        "http://svc",
        "k",
        concurrency=8,
        transport=httpx.MockTransport(handler),
        feedback=False,
    )
    n_err = sum(1 for c in cust if c % 50 == 1)
    assert res.errors == n_err
    assert res.per_customer["ok"].sum() == len(cust) - n_err
    ours = res.table.set_index("policy").loc["arm model: ours"]
    assert ours["n"] == len(cust) - n_err
    web = world.expected_revenue(cust, np.zeros(len(cust), np.int64), np.full(len(cust), 4),
                                 np.full(len(cust), 12.0))  # fmt: skip
    ok = res.per_customer["ok"].to_numpy()
    assert ours["revenue / 1k"] == pytest.approx(web[ok].mean() * 1000)


def test_drawn_outcomes_follow_the_truth(world: World, small_world: Path) -> None:
    """Message conversions drawn for the oracle's actions match their expected rate."""
    cust = simulate.sample_customers(world, 2500, seed=4)
    offers = simulate.valid_offers(world, simulate.decision_time(world))
    o, ch, h = simulate.restricted_oracle(world, cust, offers)
    responses = [
        {**_response(world, int(c), int(o[i]), int(ch[i]), int(h[i]), "model"),
         "decision_id": f"d{i}"}
        for i, c in enumerate(cust)
    ]  # fmt: skip
    scored = simulate.score_responses(world, cust, responses)
    organic = simulate.organic_model(world, small_world, attribution_days=2.0)
    assert organic[0].shape == (len(world.customer_ids),)
    assert ((organic[0] >= 0) & (organic[0] < 1)).all() and organic[0].max() > 0
    out = simulate.draw_outcomes(world, cust, scored, organic, seed=1)
    exp_conv = scored["conversion"].to_numpy()
    se = np.sqrt(np.sum(exp_conv * (1 - exp_conv)))
    assert abs(out["message_converted"].sum() - exp_conv.sum()) < 4 * se
    exp_org = organic[0][cust].sum()
    assert abs(out["organic_converted"].sum() - exp_org) < 4 * np.sqrt(exp_org) + 1
    # the funnel is nested and values are paid only on conversions
    assert (out["delivered"] >= out["opened"]).all() and (out["opened"] >= out["clicked"]).all()
    assert (out["clicked"] >= out["message_converted"]).all()
    assert ((out["value"] > 0) == out["converted"]).all()
    # no organic purchases without the world's event files
    none = simulate.organic_model(world, None)
    assert not none[0].any()


def test_feedback_is_posted_for_every_drawn_outcome(world: World, small_world: Path) -> None:
    cust = simulate.sample_customers(world, 300, seed=5)
    index = {str(world.customer_ids[c]): int(c) for c in cust}
    posted: list[dict[str, Any]] = []
    nows: set[str] = set()

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if request.url.path == "/feedback":
            posted.append(body)
            return httpx.Response(200, json={"status": "accepted"})
        c = index[body["customer_id"]]
        nows.add(body["now"])
        assert body["experiment"] == {"arm": "explore"}  # caller-allocated campaign
        arm = "holdout" if c % 10 == 0 else "explore"
        r = _response(world, c, 1, 0, 10, arm)
        return httpx.Response(200, json={**r, "decision_id": f"D{c}"})

    res = simulate.simulate_http(
        world, cust, "http://svc", None, concurrency=4, seed=2, data_dir=small_world,
        transport=httpx.MockTransport(handler), days=3, arm="explore",
    )  # fmt: skip
    assert len(nows) == 3  # decisions spread over three days
    pc = res.per_customer
    conv = [e for e in posted if e["event"] == "converted"]
    assert (
        len(conv)
        == pc["drawn_converted"].sum()
        == res.feedback["message conversions"]
        + (res.feedback["organic conversions"])
        - int((pc["drawn_message_converted"] & pc["drawn_organic_converted"]).sum())
    )
    assert all(e["value"] > 0 for e in conv)
    hold = set("D" + pc.loc[pc["holdout"], "customer_id"].str[1:].astype(int).astype(str))
    assert not any(e["decision_id"] in hold for e in posted if e["event"] == "delivered")
    assert len(posted) == res.feedback["events posted"] and res.feedback["failed"] == 0
    assert res.table["policy"].iloc[0] == "arm explore: ours"  # the campaign's arm leads
    assert "explore arm minus reference" in res.render()


def test_choice_mix_shows_our_offers_and_channels_next_to_the_oracles(world: World) -> None:
    """Issue 16: one offer winning everywhere shows against the oracle's spread of offers."""
    cust = simulate.sample_customers(world, 300, seed=5)
    at = simulate.decision_time(world)
    offers = simulate.valid_offers(world, at)
    o, ch, h = simulate.restricted_oracle(world, cust, offers, "margin")
    as_oracle = simulate.score_responses(
        world, cust, [_response(world, int(c), int(o[i]), int(ch[i]), int(h[i]), "model")
                      for i, c in enumerate(cust)],
    )  # fmt: skip
    mix = simulate.choice_mix(world, cust, as_oracle, at)
    has = o >= 0
    assert mix["match"]["share"].tolist() == pytest.approx([1.0, 1.0, 1.0])
    t = mix["offer"].set_index("offer")
    assert (t["ours"] - t["oracle"]).abs().max() == pytest.approx(0.0)
    assert t["oracle"].sum() == pytest.approx(1.0) and len(t) > 3
    # one offer on one channel for everybody: its share is 100 %, the match is its oracle share
    one = as_oracle.assign(offer=np.where(has, 0, -1), channel=CHANNELS.index("web"))
    mix = simulate.choice_mix(world, cust, one, at)
    t = mix["offer"].set_index("offer")
    assert t.loc["OFF001", "ours"] == pytest.approx(1.0)
    assert mix["match"]["share"].iloc[0] == pytest.approx(t.loc["OFF001", "oracle"])
    c = mix["channel"].set_index("channel")
    assert c.loc["web", "ours"] == pytest.approx(1.0)
    assert c["oracle"].sum() == pytest.approx(1.0)


def test_loop_merges_round_exports_into_one_training_log(tmp_path: Path) -> None:
    import pandas as pd

    from training.cli.loop import merge_exports
    from training.measurement.decision_log import load_log

    rounds = []
    for r in range(2):
        d = tmp_path / f"round-{r}"
        d.mkdir()
        ts = pd.to_datetime([f"2026-11-1{6 + r}T0{k}:00:00Z" for k in range(3)], utc=True)
        pd.DataFrame({"decision_id": [f"r{r}d{k}" for k in range(3)], "ts": ts}).to_parquet(
            d / "decisions.parquet"
        )
        pd.DataFrame({"decision_id": [f"r{r}d0"], "event": ["opened"], "ts": ts[:1]}).to_parquet(
            d / "feedback.parquet"
        )
        rounds.append(d)
    counts = merge_exports(rounds, tmp_path / "all")
    assert counts == {"decisions": 6, "feedback": 2}
    decisions, feedback = load_log(tmp_path / "all")
    assert decisions["ts"].is_monotonic_increasing and decisions["decision_id"].is_unique
    assert set(feedback["decision_id"]) == {"r0d0", "r1d0"}
