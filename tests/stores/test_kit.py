"""Every built-in store through the conformance kit's store check (keyturn.testing): publish
replayed with its mark changes nothing, the value reads back, no value in any output.

The stores and their servers are those of test_contract.py (OpenBao real; moto and a Conjur
double where nothing real can run), plus the dotenv file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from keyturn.domain.model import Secret
from keyturn.stores.base import Store, StoreContext
from keyturn.stores.dotenv import DotenvStore
from keyturn.testing import check_store
from tests.stores.test_contract import case  # noqa: F401 (the fixture: one per store)


class _Kept:
    """The fixture's store for each of the kit's opens; the fixture closes it at the end."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __enter__(self) -> Store:
        return self.store

    def __exit__(self, *exc: object) -> None:
        pass


def test_store_passes_the_kit(case: Any) -> None:  # noqa: F811
    tenant, store, _ = case
    check_store(lambda: _Kept(store), f"{tenant}/db")  # type: ignore[arg-type, return-value]


def test_dotenv_passes_the_kit(tmp_path: Path) -> None:
    settings = {"path": str(tmp_path / "app.env")}
    check_store(lambda: DotenvStore.from_settings(settings, StoreContext(Secret)), "acme/db")
