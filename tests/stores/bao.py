"""OpenBao for the vault store's tests: the shared dev server, and private ones a test may stop.

The shared server (scripts/services.d/openbao.sh) is never stopped or reconfigured by a test;
a test that needs OpenBao to go down starts its own `bao server -dev` on a free loopback port.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from tests.stores.conftest import need


def client(addr: str | None = None, token: str | None = None) -> Any:
    import hvac

    return hvac.Client(
        url=addr or need("KEYTURN_TEST_BAO_ADDR"), token=token or need("KEYTURN_TEST_BAO_TOKEN")
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateBao:
    """A `bao server -dev` of one test's own (in memory: a restart starts empty)."""

    token = "private-root-token"

    def __init__(self, log: Path, tls_dir: Path | None = None) -> None:
        self.port = free_port()
        self.tls_dir = tls_dir
        self.addr = f"{'https' if tls_dir else 'http'}://127.0.0.1:{self.port}"
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def ca(self) -> Path:
        """The CA of a -dev-tls server's certificate."""
        assert self.tls_dir is not None
        return self.tls_dir / "vault-ca.pem"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    need("KEYTURN_TEST_BAO_BIN"),
                    "server",
                    "-dev",
                    f"-dev-listen-address=127.0.0.1:{self.port}",
                    f"-dev-root-token-id={self.token}",
                    "-dev-no-store-token",
                    *(["-dev-tls", f"-dev-tls-cert-dir={self.tls_dir}"] if self.tls_dir else []),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 60
        while True:
            try:
                verify: ssl.SSLContext | bool = True
                if self.tls_dir:
                    verify = ssl.create_default_context(cafile=str(self.ca))
                health = httpx.get(f"{self.addr}/v1/sys/health", timeout=1, verify=verify)
                if health.status_code == 200:
                    return
            except (httpx.HTTPError, OSError):  # not listening, or its CA not written yet
                pass
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            assert time.monotonic() < deadline, "bao did not start"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            self.proc = None
