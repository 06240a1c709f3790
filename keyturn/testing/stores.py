"""keyturn's invariants for store plugins: publish idempotent, read back, no value shown.

from keyturn.testing import check_store
check_store(lambda: MyStore.from_settings({...}, StoreContext(resolve=...)))
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from keyturn.domain.model import Secret
from keyturn.stores.base import Numbered, PublishView, Store
from keyturn.testing.invariants import InvariantBroken, _captured, _require, _Seen

__all__ = ["check_store"]


def check_store(open_store: Callable[[], Store], credential_id: str = "kit/store-cred") -> None:
    """Publish two versions of *credential_id* (each twice, as a resumed rotation does) to
    stores from *open_store*, check what `held` and `read` say from a fresh instance, and
    look for the values in everything the store logged, raised or showed."""
    seen = _Seen()
    mark: str | None = None
    previous: Numbered | None = None
    with _captured(seen):
        for version in (1, 2):
            value = Secret(f"kit-{version}-" + secrets.token_urlsafe(18))
            seen.values.append(value)
            current = Numbered(version, value, f"kit-fp-{version}")
            view = PublishView(credential_id, credential_id.partition("/")[0], current, previous)
            mark = _publish_twice(open_store, view, mark, seen)
            _check_back(open_store, view)
            previous = current
    for value in seen.values:
        for text in seen.texts:
            _require(value.reveal() not in text, "no-value-in-output", "a value was shown")


def _publish_twice(
    open_store: Callable[[], Store], view: PublishView, mark: str | None, seen: _Seen
) -> str | None:
    number = view.current.number
    with open_store() as store:
        seen.texts.append(repr(store))
        first = store.publish(view, mark)
        try:
            again = store.publish(view, mark)
        except Exception as exc:
            seen.texts.append(f"{exc!r} {exc}")
            raise InvariantBroken(
                "publish-idempotent", f"publishing version {number} again raised {exc!r}"
            ) from exc
    _require(
        again == first,
        "publish-idempotent",
        f"publishing version {number} again moved the store's mark ({first} -> {again})",
    )
    return first


def _check_back(open_store: Callable[[], Store], view: PublishView) -> None:
    number = view.current.number
    with open_store() as store:
        held = store.held(view.credential_id, view.tenant)
        found = store.read(view.credential_id)
    _require(held is not None, "held", f"the store says it holds nothing after version {number}")
    assert held is not None
    _require(
        held.version in (None, number) and (held.value is None or held.value == view.current.value),
        "held",
        f"the store says it holds version {held.version}, {number} was published",
    )
    _require(found is not None, "read-back", f"version {number} not found after publish")
    assert found is not None
    published, read = found
    _require(read == view.current.value, "read-back", f"version {number} reads back another value")
    _require(
        published.version in (None, number),
        "read-back",
        f"the store says version {published.version}, {number} was published",
    )
