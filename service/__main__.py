"""`python -m service`: the production server (uvicorn, uvloop + httptools)."""

from __future__ import annotations

import uvicorn

from service.settings import Settings


def main() -> None:
    s = Settings.from_env()
    uvicorn.run(
        "service.app:create_app",
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


if __name__ == "__main__":
    main()
