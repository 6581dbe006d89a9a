"""Drivers: ask a decider for every sampled customer and score the answers.

:func:`simulate_http` posts ``/decide`` (and the drawn outcomes to ``/feedback``) to a running
service with bounded concurrency; :func:`simulate_inprocess` calls any ``customer_id ->
response`` function (no HTTP), for tests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from training.datasets.world import World
from training.simulation.ceiling import load_history
from training.simulation.outcomes import draw_outcomes, feedback_events, organic_model
from training.simulation.policies import reference_policies
from training.simulation.sampling import decision_time, decision_times
from training.simulation.scoring import Response, score_responses
from training.simulation.summary import SimResult, choice_mix, decompose_gap, summarize

__all__ = ["fetch_decisions", "post_feedback", "simulate_http", "simulate_inprocess"]

I64 = npt.NDArray[np.int64]


def simulate_inprocess(
    world: World,
    cust: I64,
    decide: Callable[[str, str], Response],
    seed: int = 0,
    data_dir: Path | None = None,
    quiet: npt.NDArray[np.bool_] | None = None,
) -> SimResult:
    """Score ``decide(customer_id, now_iso)`` (a response dict, or None on error)."""
    t0 = time.perf_counter()
    at = decision_time(world)
    now = at.isoformat()
    responses = [decide(str(c), now) for c in world.customer_ids[cust]]
    scored = score_responses(world, cust, responses)
    refs = reference_policies(world, cust, at, seed, data_dir, quiet)
    errors = sum(r is None for r in responses)
    return summarize(scored, refs, errors, time.perf_counter() - t0)


def _client(
    url: str, api_key: str | None, concurrency: int, timeout_s: float, transport: Any
) -> Any:
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(
        base_url=url.rstrip("/"),
        headers=headers,
        timeout=timeout_s,
        limits=limits,
        transport=transport,
    )


async def _post_all(
    url: str,
    path: str,
    bodies: Sequence[dict[str, Any]],
    api_key: str | None,
    concurrency: int,
    timeout_s: float,
    transport: Any,
) -> tuple[list[Response], int]:
    """POST every body with at most ``concurrency`` in flight; one retry on 5xx / transport
    errors. Returns (response JSON in input order, None on failure; number of failures)."""
    import httpx

    sem = asyncio.Semaphore(concurrency)
    out: list[Response] = [None] * len(bodies)
    errors = 0
    async with _client(url, api_key, concurrency, timeout_s, transport) as client:

        async def one(i: int, body: dict[str, Any]) -> None:
            nonlocal errors
            async with sem:
                for attempt in range(2):
                    try:
                        r = await client.post(path, json=body)
                    except httpx.HTTPError:
                        if attempt:
                            break
                        continue
                    if r.status_code == 200:
                        out[i] = r.json()
                        return
                    if r.status_code < 500 or attempt:
                        break
            errors += 1

        await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))
    return out, errors


async def fetch_decisions(
    url: str,
    customer_ids: Sequence[str],
    now_iso: str | Sequence[str],
    api_key: str | None = None,
    concurrency: int = 32,
    timeout_s: float = 10.0,
    transport: Any = None,
    placement: str = "campaign",
    arm: str | None = None,
) -> tuple[list[Response], int]:
    """POST /decide for every customer (``now_iso``: one time, or one per customer).

    ``arm``: allocate every customer to this arm of the default experiment (as a caller
    that allocates on its side would, e.g. an exploration campaign); None: the service
    allocates."""
    nows = [now_iso] * len(customer_ids) if isinstance(now_iso, str) else list(now_iso)
    extra: dict[str, Any] = {"experiment": {"arm": arm}} if arm else {}
    bodies = [
        {"customer_id": cid, "context": {"placement": placement}, "now": now, **extra}
        for cid, now in zip(customer_ids, nows, strict=True)
    ]
    return await _post_all(url, "/decide", bodies, api_key, concurrency, timeout_s, transport)


async def post_feedback(
    url: str,
    events: Sequence[dict[str, Any]],
    api_key: str | None = None,
    concurrency: int = 32,
    timeout_s: float = 10.0,
    transport: Any = None,
) -> tuple[int, int]:
    """POST /feedback for every event; (accepted, failed)."""
    res, errors = await _post_all(
        url, "/feedback", events, api_key, concurrency, timeout_s, transport
    )
    return sum(r is not None for r in res), errors


def simulate_http(
    world: World,
    cust: I64,
    url: str,
    api_key: str | None = None,
    concurrency: int = 32,
    seed: int = 0,
    data_dir: Path | None = None,
    transport: Any = None,
    days: int = 1,
    feedback: bool = True,
    attribution_days: float = 2.0,
    quiet: npt.NDArray[np.bool_] | None = None,
    arm: str | None = None,
) -> SimResult:
    t0 = time.perf_counter()
    nows = decision_times(world, len(cust), days)
    ids = [str(c) for c in world.customer_ids[cust]]
    responses, errors = asyncio.run(
        fetch_decisions(
            url,
            ids,
            [t.isoformat() for t in nows],
            api_key,
            concurrency,
            transport=transport,
            arm=arm,
        )
    )
    scored = score_responses(world, cust, responses)
    refs = reference_policies(world, cust, nows[0], seed, data_dir, quiet)
    res = summarize(scored, refs, errors, 0.0, headline_arm=arm or "model")
    history = load_history(data_dir) if data_dir else None
    res.gap = decompose_gap(world, cust, scored, nows[0], arm or "model", "margin", quiet, history)
    res.mix = choice_mix(world, cust, scored, nows[0], arm or "model", "margin", quiet)
    if feedback:
        organic = organic_model(world, data_dir, attribution_days)
        out = draw_outcomes(world, cust, scored, organic, seed)
        events = feedback_events(out, scored, nows)
        accepted, failed = asyncio.run(
            post_feedback(url, events, api_key, concurrency, transport=transport)
        )
        res.per_customer = pd.concat(
            [scored, out.drop(columns=["decision_id"]).add_prefix("drawn_")], axis=1
        )
        res.feedback = {
            "events posted": accepted,
            "failed": failed,
            "message conversions": int(out["message_converted"].sum()),
            "organic conversions": int(out["organic_converted"].sum()),
        }
    res.seconds = time.perf_counter() - t0
    return res
