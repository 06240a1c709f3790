"""keyturn's invariants for store plugins: publish idempotent, read back, no value shown.

from keyturn.testing import check_store
check_store(lambda: MyStore.from_settings({...}, StoreContext(resolve=...)))
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from keyturn.domain.model import Secret
from keyturn.stores.base import Store
from keyturn.testing.invariants import InvariantBroken, _captured, _require, _Seen

__all__ = ["check_store"]


def check_store(open_store: Callable[[], Store], credential_id: str = "kit/store-cred") -> None:
    """Publish two versions of *credential_id* (each twice, as a resumed rotation does) to
    stores from *open_store*, read each back from a fresh instance, and look for the values
    in everything the store logged, raised or showed."""
    seen = _Seen()
    with _captured(seen):
        for version in (1, 2):
            value = Secret(f"kit-{version}-" + secrets.token_urlsafe(18))
            seen.values.append(value)
            with open_store() as store:
                seen.texts.append(repr(store))
                store.publish(credential_id, version, value)
                try:
                    store.publish(credential_id, version, value)
                except Exception as exc:
                    seen.texts.append(f"{exc!r} {exc}")
                    raise InvariantBroken(
                        "publish-idempotent", f"publishing version {version} again raised {exc!r}"
                    ) from exc
            with open_store() as store:
                found = store.read(credential_id)
            _require(found is not None, "read-back", f"version {version} not found after publish")
            assert found is not None
            published, read = found
            _require(read == value, "read-back", f"version {version} reads back another value")
            _require(
                published.version in (None, version),
                "read-back",
                f"the store says version {published.version}, {version} was published",
            )
    for value in seen.values:
        for text in seen.texts:
            _require(value.reveal() not in text, "no-value-in-output", "a value was shown")
