"""A minimal delivery worker: ``python -m service.delivery``.

Reads the actions stream (``nb:actions``, :class:`contracts.records.ActionRecord` written by
the sequence scheduler) in a consumer
group, so several workers share the work and a crashed worker's pending entries are taken
over (``XAUTOCLAIM`` after ``--min-idle-ms``). Each action is delivered once per action id
(``SET NX`` marker ``nb:delivered:{<action_id>}``: the scheduler may emit a step again after a
crash) and acknowledged. "Delivery" here is a log line; plug a sender into :func:`deliver`.
An entry that is not a valid action record is logged and acknowledged (never retried forever).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

import msgspec
import redis

from contracts.keys import ACTIONS_STREAM, delivered_key
from contracts.records import ActionRecord, decode_action
from service.adapters.redis_store import sync_client

__all__ = ["DeliveryWorker", "deliver", "main"]

log = logging.getLogger("nextbest.delivery")
GROUP = "delivery"


def deliver(action: ActionRecord) -> None:
    log.info(
        "deliver action %s: offer %s by %s at %s",
        action.action_id,
        action.offer_id,
        action.channel,
        action.send_at,
    )


class DeliveryWorker:
    def __init__(
        self,
        client: redis.Redis,
        consumer: str,
        send: Callable[[ActionRecord], None] = deliver,
        stream: str = ACTIONS_STREAM,
        group: str = GROUP,
        min_idle_ms: int = 60_000,
        marker_ttl_s: int = 30 * 86400,
    ) -> None:
        self.client = client
        self.consumer = consumer
        self.send = send
        self.stream = stream
        self.group = group
        self.min_idle_ms = min_idle_ms
        self.marker_ttl_s = marker_ttl_s
        try:
            client.xgroup_create(stream, group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _handle(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> int:
        delivered = 0
        for entry_id, fields in entries:
            if not fields:  # trimmed away while pending
                self.client.xack(self.stream, self.group, entry_id)
                continue
            try:
                action = decode_action(fields[b"record"])
            except (KeyError, msgspec.DecodeError) as exc:
                log.error("skipped action entry %s: not an action record (%s)", entry_id, exc)
                self.client.xack(self.stream, self.group, entry_id)
                continue
            marker = delivered_key(action.action_id)
            if self.client.set(marker, entry_id, nx=True, ex=self.marker_ttl_s):
                self.send(action)
                delivered += 1
            self.client.xack(self.stream, self.group, entry_id)
        return delivered

    def run_once(self, block_ms: int | None = None, count: int = 100) -> int:
        """Take over stale pending entries, read new ones, deliver and ack; returns delivered."""
        n = 0
        claimed: Any = self.client.xautoclaim(
            self.stream, self.group, self.consumer, self.min_idle_ms, "0-0", count=count
        )
        n += self._handle(claimed[1])
        resp: Any = self.client.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=count, block=block_ms
        )
        for _, entries in resp or []:
            n += self._handle(entries)
        return n

    def run(self, block_ms: int = 5000) -> None:
        while True:
            self.run_once(block_ms)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m service.delivery", description=__doc__)
    p.add_argument(
        "--redis-url", default=os.environ.get("NEXTBEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    p.add_argument(
        "--cluster",
        action=argparse.BooleanOptionalAction,
        default=os.environ.get("NEXTBEST_REDIS_CLUSTER", "0").lower() in ("1", "true", "yes"),
        help="the URL names a Redis Cluster node (default: NEXTBEST_REDIS_CLUSTER)",
    )
    p.add_argument("--consumer", default=f"{socket.gethostname()}-{os.getpid()}")
    p.add_argument("--once", action="store_true", help="one pass, then exit")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    worker = DeliveryWorker(sync_client(args.redis_url, args.cluster), args.consumer)
    if args.once:
        print(worker.run_once(block_ms=None))
    else:
        worker.run()


if __name__ == "__main__":
    main()
