"""Local API keys for a development machine: `python -m service.localkeys [--env]`.

The service refuses to start without keys (unless ``NEXTBEST_DEV_MODE=1``). The README's
main command (``make demo``) and ``make serve`` call :func:`ensure_local_keys`, which creates
once, under ``$NEXTBEST_VAR_DIR/secrets/`` (mode 0600):

| file | content |
|---|---|
| ``api-key`` / ``admin-key`` | the key in clear, for local clients (curl, the demo, Locust) |
| ``api-keys.sha256`` / ``admin-keys.sha256`` | its ``sha256:<hex>`` digest, what the service loads (``NEXTBEST_API_KEYS_FILE``, ``NEXTBEST_ADMIN_KEYS_FILE``) |

``--env`` prints ``export`` lines for a shell. Production keys come from your secret store
through the same two variables; nothing here is meant for production.
"""

from __future__ import annotations

import argparse
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from contracts.settings import ROOT
from service.security import hash_key

__all__ = ["LocalKeys", "ensure_local_keys"]


@dataclass(frozen=True)
class LocalKeys:
    api_key: str
    admin_key: str
    api_keys_file: Path
    admin_keys_file: Path

    def env(self) -> dict[str, str]:
        """The variables a service process needs to accept these keys."""
        return {
            "NEXTBEST_API_KEYS_FILE": str(self.api_keys_file),
            "NEXTBEST_ADMIN_KEYS_FILE": str(self.admin_keys_file),
        }


def _secret(folder: Path, name: str) -> tuple[str, Path]:
    clear = folder / f"{name}-key"
    digest = folder / f"{name}-keys.sha256"
    if not clear.exists():
        key = f"nb_{name}_{secrets.token_urlsafe(24)}"
        fd = os.open(clear, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
    key = clear.read_text().strip()
    digest.write_text(
        f"# {name} key for this machine (service/localkeys.py)\nsha256:{hash_key(key)}\n"
    )
    digest.chmod(0o600)
    return key, digest


def ensure_local_keys(var_dir: Path | None = None) -> LocalKeys:
    """Create (once) and return this machine's local API and admin keys."""
    var = var_dir or Path(os.environ.get("NEXTBEST_VAR_DIR", ROOT / "var"))
    folder = var.resolve() / "secrets"
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    api, api_file = _secret(folder, "api")
    admin, admin_file = _secret(folder, "admin")
    return LocalKeys(api, admin, api_file, admin_file)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m service.localkeys", description=__doc__)
    p.add_argument("--env", action="store_true", help="print export lines for a shell")
    args = p.parse_args(argv)
    keys = ensure_local_keys()
    if args.env:
        for k, v in keys.env().items():
            print(f"export {k}={v}")
    else:
        print(f"API key:   {keys.api_key}\nadmin key: {keys.admin_key}")
        print(f"(digests the service loads: {keys.api_keys_file}, {keys.admin_keys_file})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
