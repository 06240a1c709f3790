"""A value with a line break must not become lines of its own in a dotenv file.

Every reader of a `.env` (keyturn's own parse, docker's --env-file, systemd) takes it line by
line, so a value `x\\nGLOBEX_DB=...` published as-is set a variable of another credential (of
another tenant, in a store several tenants share) or any variable at all (LD_PRELOAD).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from keyturn.domain.model import Secret
from keyturn.stores.base import Numbered, PublishView, StoreContext, StoreRefused
from keyturn.stores.dotenv import DotenvStore, parse

BREAKS = ["\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


def _store(tmp_path: Path) -> DotenvStore:
    context = StoreContext(resolve=lambda ref: Secret(ref), base_dir=str(tmp_path), name="env")
    return DotenvStore.from_settings({"path": "app.env"}, context)  # type: ignore[return-value]


def _view(cred: str, value: str, previous: str | None = None) -> PublishView:
    def numbered(n: int, v: str) -> Numbered:
        return Numbered(number=n, value=Secret(v), fingerprint=f"fp{n}")

    return PublishView(
        credential_id=cred,
        tenant=cred.split("/")[0],
        current=numbered(2, value),
        previous=numbered(1, previous) if previous is not None else None,
    )


@pytest.mark.parametrize("brk", BREAKS)
@pytest.mark.parametrize("where", ["current", "previous"])
def test_a_value_with_a_line_break_is_refused(tmp_path: Path, brk: str, where: str) -> None:
    store = _store(tmp_path)
    store.publish(_view("globex/db", "globex-value-1"), None)
    before = (tmp_path / "app.env").read_text()
    evil = f"x{brk}GLOBEX_DB=attacker-chosen{brk}LD_PRELOAD=/tmp/evil.so{brk}PAD="
    view = (
        _view("acme/inj", evil)
        if where == "current"
        else _view("acme/inj", "fresh-value-2", previous=evil)
    )
    with pytest.raises(StoreRefused) as refused:
        store.publish(view, None)
    assert "attacker-chosen" not in str(refused.value)  # the value is not in the error
    assert (tmp_path / "app.env").read_text() == before  # nothing written
    assert parse(before)["GLOBEX_DB"] == "globex-value-1"


def test_ordinary_values_still_publish(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.publish(_view("acme/app", "it's a\tvalue with 'quotes' and spaces"), None)
    assert parse((tmp_path / "app.env").read_text())["ACME_APP"] == (
        "it's a\tvalue with 'quotes' and spaces"
    )
