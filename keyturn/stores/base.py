"""The store plugin interface: places where consumers read the current value.

keyturn's own database is the source of truth; a store holds a published copy. `publish` is
idempotent (publishing the same version twice changes nothing). Secret settings are typed
`SecretRef`; errors are `PublishFailed` (keyturn.domain.errors). `keyturn.testing.check_store`
checks a store against this contract. Plugins register under the entry-point group
``keyturn.stores``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict

from keyturn.domain.errors import PublishFailed
from keyturn.domain.model import Secret
from keyturn.refs import SecretRef

__all__ = [
    "PublishFailed",
    "Published",
    "Secret",
    "SecretRef",
    "Store",
    "StoreConfig",
    "StoreContext",
]


class StoreConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class StoreContext:
    resolve: Callable[[str], Secret]
    base_dir: str = "."


@dataclass(frozen=True)
class Published:
    """What a store holds for a credential: the version number, if it can tell."""

    version: int | None


class Store:
    name: ClassVar[str]
    config_model: ClassVar[type[StoreConfig]] = StoreConfig

    def __init__(self, config: StoreConfig, context: StoreContext) -> None:
        self.config = config
        self.context = context

    @classmethod
    def from_settings(cls, settings: dict[str, Any], context: StoreContext) -> Store:
        return cls(cls.config_model.model_validate(settings), context)

    def publish(self, credential_id: str, version: int, value: Secret) -> None:
        """Make *value* (version *version*) what consumers of *credential_id* read."""
        raise NotImplementedError

    def read(self, credential_id: str) -> tuple[Published, Secret] | None:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
