"""`python -m service`: the production server (uvicorn, uvloop + httptools)."""

from __future__ import annotations

import uvicorn

from service.settings import Settings


def serve(factory: str = "service.app:create_app") -> None:
    """Run the app factory ``factory`` under the production server settings."""
    s = Settings.from_env()
    uvicorn.run(
        factory,
        factory=True,
        host=s.host,
        port=s.port,
        workers=s.workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level=s.log_level.lower(),
        timeout_graceful_shutdown=10,
    )


def main() -> None:
    serve()


if __name__ == "__main__":
    main()
