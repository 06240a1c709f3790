"""The `file` store reader: `<dir>/<tenant>/<name>` (+ `.previous`, `.next`), watched by stat."""

from __future__ import annotations

import os
from pathlib import Path

from keyturn.client import Client
from tests.client.conftest import until


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # as the store writes: atomically


def test_file_reader_falls_back_and_sees_changes(tmp_path: Path) -> None:
    secret = tmp_path / "acme" / "db"
    _write(secret, "old-value\n")
    with Client.files(tmp_path) as client:
        assert client.get("acme/db").value == "old-value"
        _write(secret.with_name("db.next"), "new-value\n")
        assert until(lambda: client.get("acme/db").next is not None)

        def login(value: object) -> str:
            if getattr(value, "value", None) != "new-value":
                raise PermissionError("refused")
            return "ok"

        assert client.use("acme/db", login, auth_failure=lambda e: isinstance(e, PermissionError))
        assert client.state.fallbacks == 1
        _write(secret, "new-value\n")
        secret.with_name("db.next").unlink()
        assert until(lambda: client.get("acme/db").next is None)
        assert client.get("acme/db").value == "new-value"


def test_file_reader_refuses_paths_outside_its_directory(tmp_path: Path) -> None:
    import pytest

    from keyturn.client import ClientError

    with Client.files(tmp_path / "store", watch=False) as client, pytest.raises(ClientError):
        client.get("../../etc/passwd")


def test_file_reader_reads_what_the_file_store_writes(tmp_path: Path) -> None:
    """The SDK's reader and keyturn's `file` store agree on the layout: value, previous and
    version number, published twice as a rotation does."""
    from keyturn.domain.model import Secret
    from keyturn.stores.base import Numbered, PublishView, StoreContext
    from keyturn.stores.file import FileStore

    store = FileStore.from_settings({"directory": str(tmp_path)}, StoreContext(resolve=Secret))
    first, second = Numbered(1, Secret("value-one"), "fp1"), Numbered(2, Secret("value-two"), "fp2")
    with store:
        mark = store.publish(PublishView("acme/db", "acme", first), None)
        store.publish(PublishView("acme/db", "acme", second, previous=first), mark)
    with Client.files(tmp_path, watch=False) as client:
        got = client.get("acme/db")
        assert (got.value, got.version) == ("value-two", 2)
        assert got.previous is not None and got.previous.value == "value-one"
