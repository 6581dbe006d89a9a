"""The README main command's last step: the service demo, against the production server.

Runs ``run_demo`` and ``run_realtime_demo`` (what ``python -m service.demo`` prints) on the
test world, so the contrasting customers and the abandoned-cart story cannot rot unnoticed.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from loadtests.faults import API_KEY, free_port, start_service
from service.demo import pick_customers, run_demo, run_realtime_demo

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def test_demo_shows_contrasting_decisions_and_a_sequence(
    model_bundle: Path, small_world: Path, redis_url: str, redis_store: Any, tmp_path: Path
) -> None:
    people = pick_customers(small_world)
    assert len(set(people.values())) == len(people)  # six different people
    port = free_port()
    svc = start_service(redis_url, model_bundle, tmp_path / "spool", port)
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {API_KEY}"}
    try:
        text = "\n".join(run_demo(base, small_world, auth, redis_url))
        again = "\n".join(run_demo(base, small_world, auth, redis_url))
        assert again.count("suppressed[frequency_cap]: push") == 1  # a re-run tells the same story
        assert "== opted-out customer" in text and "arm=holdout" in text
        assert "suppressed[no_consent]" in text and "suppressed[frequency_cap]: push" in text
        assert "cold_start=True" in text and text.count("ACTION  ") == 7
        rt = "\n".join(run_realtime_demo(base, small_world, redis_url, auth))
        assert "cart_items_rt=1.0" in rt
        assert "step 0 ran by the in-service scheduler" in rt
        assert "sequence ended at once: True" in rt
    finally:
        svc.send_signal(signal.SIGTERM)
        svc.wait(timeout=20)
