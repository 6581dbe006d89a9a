"""`python -m service`: the production server (uvicorn, uvloop + httptools).

Configuration comes from NEXTBEST_* environment variables only (``--check-config`` prints
the values in effect and checks them without serving).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from contracts.settings import Settings, SettingsError, markdown_table

__all__ = ["check_config", "main", "serve"]


def serve(factory: str = "service.app:create_app", settings: Settings | None = None) -> None:
    """Run the app factory ``factory`` under the production server settings."""
    import uvicorn

    from service.observability import uvicorn_log_config

    s = settings or Settings.from_env()
    uvicorn.run(
        factory,
        factory=True,
        host=s.server.host,
        port=s.server.port,
        workers=s.server.workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level=s.server.log_level.lower(),
        log_config=uvicorn_log_config(s.server.log_level),
        timeout_graceful_shutdown=10,
    )


def check_config(s: Settings) -> list[str]:
    """Problems that would stop the service from serving well (empty: all good)."""
    from service.adapters.models import load_models
    from service.domain.config import load_policy
    from service.realtime.sequences import load_sequences
    from service.security import keyring_from_settings

    problems: list[str] = []
    checks: list[tuple[str, Callable[[], object]]] = [
        ("keys", lambda: keyring_from_settings(s)),
        ("policy", lambda: load_policy(s.policy.policy_file)),
        ("sequences", lambda: load_sequences(s.policy.sequences_file)),
        ("models", lambda: load_models(s)),
    ]
    for name, check in checks:
        try:
            check()
        except Exception as exc:
            problems.append(f"{name}: {exc}")
    try:
        import redis

        redis.Redis.from_url(s.redis.url, socket_timeout=2).ping()
    except Exception as exc:
        problems.append(f"redis: {s.redis.url.split('@')[-1]} does not answer ({exc})")
    return problems


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nextbest")
    except PackageNotFoundError:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m service",
        description="Serve the nextbest decision API. Every setting comes from an "
        "environment variable (see --variables).",
    )
    p.add_argument("--version", action="version", version=f"nextbest {_version()}")
    p.add_argument(
        "--check-config",
        action="store_true",
        help="print the settings in effect (secrets masked), check keys, policy, sequences, "
        "models and Redis, and exit 0 when all are usable (1 otherwise)",
    )
    p.add_argument(
        "--variables", action="store_true", help="print every environment variable and exit"
    )
    args = p.parse_args(argv)
    if args.variables:
        print(markdown_table())
        return 0
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if args.check_config:
        print(json.dumps(settings.describe(), indent=2))
        problems = check_config(settings)
        for line in problems:
            print(f"problem: {line}", file=sys.stderr)
        print("configuration OK" if not problems else f"{len(problems)} problem(s)")
        return 1 if problems else 0
    serve(settings=settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
