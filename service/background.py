"""Background loops (spool replay, model polling, the sequence scheduler) and their shutdown.

Loops run until a shared ``stop`` event is set; they sleep with :func:`sleep_or_stop` so a
shutdown wakes them at once. Cancellation alone is not a reliable stop signal here: a loop
that catches ``Exception`` to survive a Redis outage can swallow it, because redis-py turns
a ``CancelledError`` landing mid-command into a connection or timeout error. The lifespan
calls :func:`stop_tasks`, which sets the event, waits within a budget, and only then
cancels what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

__all__ = ["sleep_or_stop", "stop_tasks"]

log = logging.getLogger("nextbest.background")


async def sleep_or_stop(stop: asyncio.Event | None, seconds: float) -> bool:
    """Sleep ``seconds``; return True at once if ``stop`` is (or becomes) set."""
    if stop is None:
        await asyncio.sleep(seconds)
        return False
    if stop.is_set():
        return True
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


async def stop_tasks(
    tasks: Iterable[asyncio.Task[None]], stop: asyncio.Event, timeout_s: float = 5.0
) -> None:
    """Ask the loops to stop, wait for them (``timeout_s`` at most), cancel what is left."""
    stop.set()
    pending = [t for t in tasks if not t.done()]
    if not pending:
        return
    _, still = await asyncio.wait(pending, timeout=timeout_s)
    for t in still:
        log.error(
            "background task %s did not stop within %.1fs: cancelled", t.get_name(), timeout_s
        )
        t.cancel()
    if still:
        await asyncio.wait(still, timeout=1.0)
