"""The store plugin interface: places where consumers read the current value.

keyturn's own database is the source of truth; a store holds a published copy. The engine
hands a store a :class:`PublishView` (the numbered current value, and the previous and next
ones where the strategy keeps them) and the *mark* the store returned the last time keyturn
wrote there (a KV version, a version id): the store's check-and-set token. Plugins register
under the entry-point group ``keyturn.stores``.

The verbs, and when the engine calls them:

- ``publish(view, mark)`` at the rotation's ``publish`` step (and by ``keyturn verify
  --repair``). Idempotent: when the store already holds ``view.current`` (a replay after a
  crash), it changes nothing and returns the mark of what is there. When what the store holds
  is neither what keyturn wrote last (*mark*) nor the view, someone else wrote it: raise
  :class:`StoreConflict`, never overwrite. Returns the new mark (or None if the store has no
  such notion).
- ``held(credential_id, tenant)`` by ``keyturn verify``: which version the store holds,
  without the value where the store can tell (metadata), so that drift is found without
  reading secrets.
- ``scan(prefix)`` by ``keyturn import``: every secret under a path or name prefix (a store
  that cannot list raises NotImplementedError, the default).
- ``read(credential_id)`` by ``keyturn import``: the value a store holds.
- ``close()``: release connections; a store is also a context manager.

Errors: :class:`StoreUnreachable` (down, timeout: the engine retries with backoff),
:class:`StoreRefused` (permission, quota: also retried, and alerted), :class:`StoreConflict`
(drift). Their messages never contain a value.

Secret settings are typed `SecretRef`; `keyturn.testing.check_store` checks a store against
this contract.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict

from keyturn.domain.errors import PublishFailed
from keyturn.domain.model import Secret
from keyturn.refs import SecretRef, require_reference, settings_path

__all__ = [
    "Found",
    "Held",
    "Numbered",
    "PublishFailed",
    "PublishView",
    "Published",
    "Secret",
    "SecretRef",
    "Store",
    "StoreConfig",
    "StoreConflict",
    "StoreContext",
    "StoreRefused",
    "StoreUnreachable",
    "reference",
]


class StoreConfig(BaseModel):
    """Base of every store's settings model: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def reference(value: str | None, where: str, key: str) -> str | None:
    """A settings validator's helper: a secret setting must be a reference (env:, file:...)."""
    return None if value is None else require_reference(value, where, key)


@dataclass
class StoreContext:
    """What a plugin gets from keyturn besides its settings."""

    # Resolve a secret reference (env:NAME, file:PATH, keyturn:ID) to its value.
    resolve: Callable[[str], Secret]
    # The directory relative paths in the settings are taken from (the config file's).
    base_dir: str = "."
    # The store's name in the inventory (for messages).
    name: str = ""

    def path(self, name: str) -> str:
        """*name* from the settings as a path: a relative one is from `base_dir`."""
        return str(settings_path(self.base_dir, name))


@dataclass(frozen=True)
class Numbered:
    """One version of a credential as a store sees it: number, value, HMAC fingerprint."""

    number: int
    value: Secret
    fingerprint: str


@dataclass(frozen=True)
class PublishView:
    """What consumers of a credential should read from a store."""

    credential_id: str
    tenant: str
    current: Numbered
    previous: Numbered | None = None
    # A value that becomes current soon (single strategy, before promotion), if published.
    next: Numbered | None = None

    @property
    def name(self) -> str:
        """The id without its tenant segment: `acme/smtp-admin` -> `smtp-admin`."""
        head, _, rest = self.credential_id.partition("/")
        return rest if head == self.tenant and rest else self.credential_id

    def fields(self) -> dict[str, str]:
        """Template fields of path settings: {id}, {tenant}, {name}."""
        return {"id": self.credential_id, "tenant": self.tenant, "name": self.name}


@dataclass(frozen=True)
class Held:
    """What a store holds for a credential: the version number and fingerprint, if it can
    tell (metadata), its mark (the store's own version id), or else the value itself, which
    the engine compares with the versions it holds."""

    version: int | None
    fingerprint: str | None = None
    mark: str | None = None
    value: Secret | None = None


@dataclass(frozen=True)
class Published:
    """What a store holds for a credential: the version number, if it can tell."""

    version: int | None


@dataclass(frozen=True)
class Found:
    """A secret found in a store by ``keyturn import``: where, and its value."""

    path: str
    value: Secret
    details: dict[str, Any] = field(default_factory=dict)


class StoreUnreachable(PublishFailed):
    """The store could not be reached; keyturn retries."""

    code = "store_unreachable"


class StoreRefused(PublishFailed):
    """The store refused the operation (permission, quota, bad setting)."""

    code = "store_refused"


class StoreConflict(PublishFailed):
    """The store holds a value keyturn did not write (drift): it is not overwritten."""

    code = "store_conflict"


class Store:
    name: ClassVar[str]
    config_model: ClassVar[type[StoreConfig]] = StoreConfig

    def __init__(self, config: StoreConfig, context: StoreContext) -> None:
        self.config = config
        self.context = context

    @classmethod
    def from_settings(cls, settings: dict[str, Any], context: StoreContext) -> Store:
        return cls(cls.config_model.model_validate(settings), context)

    def publish(self, view: PublishView, mark: str | None) -> str | None:
        """Make ``view.current`` what consumers of the credential read; see the module."""
        raise NotImplementedError

    def held(self, credential_id: str, tenant: str) -> Held | None:
        """Which version the store holds for *credential_id* (None: nothing)."""
        raise NotImplementedError

    def read(self, credential_id: str) -> tuple[Published, Secret] | None:
        """The value the store holds for *credential_id* and its version, if any."""
        raise NotImplementedError

    def scan(self, prefix: str) -> Iterator[Found]:
        """Every secret under *prefix* (a path, a name prefix), for ``keyturn import``."""
        raise NotImplementedError(f"the {self.name} store cannot list secrets")

    def close(self) -> None:
        """Release connections."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
