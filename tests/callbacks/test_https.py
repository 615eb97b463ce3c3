"""HTTPS delivery to a pinned IP: TLS still verifies the *name* (SNI), with a test CA."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from arq.connections import ArqRedis

from mimoq.core import deadletters
from mimoq.core.deadletters import DeadLetterReason
from mimoq.worker.callback_delivery import build_client
from tests.callbacks.conftest import make_settings, run_worker, schedule
from tests.conftest import RedisServer
from tests.support.receiver import Receiver

pytestmark = pytest.mark.redis


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throw-away CA and a certificate for hooks.test only (not for 127.0.0.1)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("pki")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=mimoq test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
        cwd=d,
    )
    _openssl(
        "req", *ec, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=hooks.test", cwd=d
    )
    (d / "ext.cnf").write_text(
        "subjectAltName=DNS:hooks.test\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "leaf.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        cwd=d,
    )
    return d


@pytest.fixture
def tls_receiver(pki: Path) -> Iterator[Receiver]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki / "leaf.pem", pki / "leaf.key")
    with Receiver(ssl_context=context) as rx:
        yield rx


async def loopback_dns(host: str, port: int) -> Sequence[str]:
    return ["127.0.0.1"]


async def test_https_to_a_pinned_ip_verifies_the_certificate_for_the_name(
    redis: ArqRedis, redis_server: RedisServer, tls_receiver: Receiver, pki: Path
) -> None:
    settings = make_settings()
    client = build_client(settings, verify=ssl.create_default_context(cafile=str(pki / "ca.pem")))
    url = f"https://hooks.test:{tls_receiver.port}/hook"
    await schedule(redis, tls_receiver, url=url)

    async with client:
        await run_worker(
            redis_server, settings, callback_client=client, callback_resolver=loopback_dns
        )

    [request] = tls_receiver.wait_for(1)
    assert request.headers["host"] == f"hooks.test:{tls_receiver.port}"
    assert request.headers["webhook-id"] == "cb-job-1"


async def test_a_certificate_for_another_name_is_rejected(
    redis: ArqRedis, redis_server: RedisServer, tls_receiver: Receiver, pki: Path
) -> None:
    settings = make_settings(callbacks={"schedule_s": "0"})
    client = build_client(settings, verify=ssl.create_default_context(cafile=str(pki / "ca.pem")))
    delivery_id = await schedule(
        redis, tls_receiver, url=f"https://other.test:{tls_receiver.port}/hook"
    )

    async with client:
        await run_worker(
            redis_server, settings, callback_client=client, callback_resolver=loopback_dns
        )

    assert tls_receiver.requests == []
    letter = await deadletters.get(redis, delivery_id)
    assert letter is not None and letter.reason is DeadLetterReason.exhausted
    assert "CERTIFICATE_VERIFY_FAILED" in (letter.last_error or "")
