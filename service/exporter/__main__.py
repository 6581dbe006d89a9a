"""``python -m service.exporter``: drain the decision log from Redis into Parquet files.

    python -m service.exporter            # run until SIGTERM / SIGINT
    python -m service.exporter --drain    # export everything logged so far, then exit

Settings (environment, :mod:`contracts.settings`): NEXTBEST_REDIS_URL / NEXTBEST_REDIS_CLUSTER,
NEXTBEST_LOG_URL (folder or fsspec URL), NEXTBEST_EXPORTER_FLUSH_S, NEXTBEST_EXPORTER_MAX_ROWS,
NEXTBEST_EXPORTER_CONSUMER, NEXTBEST_EXPORTER_METRICS_PORT, NEXTBEST_LOG_BACKLOG_MAX. Needs
pyarrow and fsspec (the train image, or `make setup`), not the service image.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from contracts.settings import Settings, SettingsError
from service.exporter import Exporter, ExporterMetrics


def build(settings: Settings, metrics: ExporterMetrics | None = None) -> Exporter:
    from service.adapters.redis_store import sync_client

    client = sync_client(settings.redis.url, settings.redis.cluster, socket_timeout=30)
    return Exporter(
        client,
        settings.log.url,
        consumer=settings.log.consumer,
        flush_s=settings.log.flush_s,
        max_rows=settings.log.max_rows,
        backlog_max=settings.redis.log_backlog_max,
        metrics=metrics,
    )


def drain(exporter: Exporter) -> int:
    """Recover, then flush until the streams are empty; returns the rows written."""
    exporter.ensure_groups()
    res = exporter.recover()
    total = sum(res.rows.values())
    exporter.flush_s = min(exporter.flush_s, 1.0)
    while True:
        batch = exporter.collect()
        if not batch:
            break
        total += sum(exporter.flush(batch).rows.values())
    exporter.observe()
    return total


def main(argv: list[str] | None = None) -> int:
    from service.observability import configure_logging

    p = argparse.ArgumentParser(
        prog="python -m service.exporter",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--drain", action="store_true", help="export what is logged, then exit")
    args = p.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.server.log_level)
    metrics = ExporterMetrics()
    exporter = build(settings, metrics)
    if args.drain:
        n = drain(exporter)
        print(f"exported {n:,} rows to {settings.log.url}")
        return 0
    if settings.log.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.log.metrics_port, registry=metrics.registry)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    exporter.run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
