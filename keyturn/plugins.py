"""Discovery of target and store plugins through entry points (built-ins included)."""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points
from typing import Any

from keyturn.domain.errors import PluginError, PluginMissing
from keyturn.stores.base import Store
from keyturn.targets.base import Target

GROUPS = {"target": "keyturn.targets", "store": "keyturn.stores"}
# Registered in-process, e.g. by tests; same rules as entry points.
_EXTRA: dict[str, dict[str, type[Any]]] = {"target": {}, "store": {}}


@cache
def _discovered(kind: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for ep in entry_points(group=GROUPS[kind]):
        if ep.name in found and found[ep.name].value != ep.value:
            raise PluginError(
                f"two {kind} plugins are named {ep.name!r} ({found[ep.name].value} and "
                f"{ep.value}); uninstall one"
            )
        found[ep.name] = ep
    return found


def register(kind: str, cls: type[Any]) -> None:
    """Register a plugin class in-process (third parties use entry points instead)."""
    name = cls.name
    if name in _discovered(kind) or name in _EXTRA[kind]:
        raise PluginError(f"a {kind} plugin named {name!r} is already registered")
    _EXTRA[kind][name] = cls


def unregister(kind: str, name: str) -> None:
    _EXTRA[kind].pop(name, None)


def names(kind: str) -> list[str]:
    return sorted({*_discovered(kind), *_EXTRA[kind]})


def load_target(name: str) -> type[Target]:
    """The target plugin class called *name*, checked to be a `Target`."""
    cls = load("target", name)
    if not (isinstance(cls, type) and issubclass(cls, Target)):
        raise PluginError(f"target plugin {name!r} is not a keyturn.targets.base.Target")
    return cls


def load_store(name: str) -> type[Store]:
    """The store plugin class called *name*, checked to be a `Store`."""
    cls = load("store", name)
    if not (isinstance(cls, type) and issubclass(cls, Store)):
        raise PluginError(f"store plugin {name!r} is not a keyturn.stores.base.Store")
    return cls


def load(kind: str, name: str) -> type[Any]:
    """The plugin class called *name*; a clear error names the extra to install if missing.
    Prefer the typed `load_target` and `load_store`."""
    if name in _EXTRA[kind]:
        return _EXTRA[kind][name]
    ep = _discovered(kind).get(name)
    if ep is None:
        raise PluginMissing(
            f"no {kind} type {name!r}; installed: {', '.join(names(kind)) or 'none'}"
        )
    try:
        cls = ep.load()
    except ImportError as exc:
        extra = getattr(exc, "name", None) or "its dependencies"
        raise PluginMissing(
            f"the {kind} type {name!r} needs {extra}: pip install 'keyturn[all]'"
        ) from exc
    if getattr(cls, "name", None) != name:
        raise PluginError(f"{kind} plugin {ep.value} declares name {cls.name!r}, not {name!r}")
    loaded: type[Any] = cls
    return loaded
