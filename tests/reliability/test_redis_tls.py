"""The service on a Redis that wants TLS and a password: `rediss://:<password>@host:port/db`.

A throwaway CA and server certificate are made in the test; the redis-server listens on a
TLS port only. The service must be ready, decide, log and take feedback over it, and a wrong
password must show as not-ready (with a reason) and degraded decisions, never a 500.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from litestar.testing import AsyncTestClient

from loadtests.faults import free_port, redis_binary
from service.adapters.redis_store import read_decisions
from service.app import create_app
from tests.reliability.conftest import AUTH, settings_for

pytestmark = [pytest.mark.anyio]

PASSWORD = "s3cret-pw"


def make_certs(folder: Path) -> tuple[Path, Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("nextbest-test-ca"))
        .issuer_name(name("nextbest-test-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(cert.public_bytes(pem))
    paths[2].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    ca, cert, key = make_certs(tmp_path)
    port = free_port()
    proc = subprocess.Popen(
        [redis_binary(), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca),
         "--tls-auth-clients", "no", "--requirepass", PASSWORD, "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={ca}"
    try:
        for _ in range(100):
            try:
                if redis.Redis.from_url(url, socket_timeout=0.5).ping():
                    break
            except redis.RedisError:
                time.sleep(0.05)
        else:
            pytest.fail("redis-server with TLS did not start (built without TLS support?)")
        yield port, ca
    finally:
        proc.kill()
        proc.wait()


async def test_rediss_with_password(
    tls_redis: tuple[int, Path], model_bundle: Path, tmp_path: Path
) -> None:
    port, ca = tls_redis
    url = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={ca}"
    with pytest.raises(redis.ConnectionError):  # the server speaks TLS only
        redis.Redis(host="127.0.0.1", port=port, password=PASSWORD, socket_timeout=1).ping()
    app = create_app(
        settings_for(url, model_bundle, tmp_path / "spool", NEXTBEST_REDIS_TIMEOUT_MS=500)
    )
    async with AsyncTestClient(app=app) as c:
        assert (await c.get("/ready")).status_code == 200
        d = await _decide(c)
        assert d["degraded"] == [] and d["action"]["channel"] == "web"
        fb = await c.post(
            "/feedback", json={"decision_id": d["decision_id"], "event": "clicked"}, headers=AUTH
        )
        assert fb.json()["status"] == "accepted"
    logged = read_decisions(redis.Redis.from_url(url))
    assert [r.decision_id for r in logged] == [d["decision_id"]]


async def test_a_wrong_password_is_not_ready_and_degrades(
    tls_redis: tuple[int, Path], model_bundle: Path, tmp_path: Path
) -> None:
    port, ca = tls_redis
    url = f"rediss://:wrong@127.0.0.1:{port}/0?ssl_ca_certs={ca}"
    app = create_app(
        settings_for(url, model_bundle, tmp_path / "spool", NEXTBEST_REDIS_TIMEOUT_MS=500)
    )
    async with AsyncTestClient(app=app) as c:
        ready = await c.get("/ready")
        assert ready.status_code == 503 and "redis unreachable" in ready.json()["problems"][0]
        assert PASSWORD not in ready.text and "wrong" not in ready.text  # no secret echoed
        d = await _decide(c)
        assert "redis_unavailable" in d["degraded"] or "log_spooled" in d["degraded"]


async def _decide(c: AsyncTestClient[Any]) -> dict[str, Any]:
    r = await c.post(
        "/decide",
        json={"anonymous_id": "tls-1", "context": {"placement": "home_banner"}},
        headers=AUTH,
    )
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out
