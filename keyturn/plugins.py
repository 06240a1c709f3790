"""Discovery of target and store plugins through entry points (built-ins included)."""

from __future__ import annotations

import importlib
from functools import cache
from typing import Any

from keyturn.domain.errors import PluginError, PluginMissing
from keyturn.stores.base import Store
from keyturn.targets.base import Target

GROUPS = {"target": "keyturn.targets", "store": "keyturn.stores"}
# keyturn's own plugins, as pyproject.toml registers them (tests/core/test_plugin_api.py
# checks the two agree). Loading one of these imports it at once: scanning every installed
# distribution's entry points costs a CLI command tens of milliseconds at each start. Their
# names are keyturn's: a third-party entry point under one of them is never loaded in its
# place, and it is refused (one error naming both, for any third-party name of that kind)
# whenever the entry points are read: to load a type that is not built in, or to list them.
BUILT_IN: dict[str, dict[str, str]] = {
    "target": {
        "passwd-file": "keyturn.targets.passwd_file:PasswdFileTarget",
        "postgres": "keyturn.targets.postgres:PostgresTarget",
        "mysql": "keyturn.targets.mysql:MysqlTarget",
        "redis": "keyturn.targets.redis:RedisTarget",
        "encrypted-column": "keyturn.targets.encrypted_column:EncryptedColumnTarget",
        "mailu": "keyturn.targets.mailu:MailuTarget",
        "mailu-token": "keyturn.targets.mailu:MailuTokenTarget",
        "dovecot": "keyturn.targets.dovecot:DovecotTarget",
        "aws-iam-key": "keyturn.targets.aws_iam:AwsIamKeyTarget",
        "aws-ses-smtp": "keyturn.targets.aws_ses:AwsSesSmtpTarget",
        "http-api-key": "keyturn.targets.http_api_key:HttpApiKeyTarget",
        "tls-certificate": "keyturn.targets.tls_certificate:TlsCertificateTarget",
    },
    "store": {
        "dotenv": "keyturn.stores.dotenv:DotenvStore",
        "file": "keyturn.stores.file:FileStore",
        "conjur": "keyturn.stores.conjur:ConjurStore",
        "vault": "keyturn.stores.vault:VaultStore",
        "aws-secretsmanager": "keyturn.stores.aws_secretsmanager:AwsSecretsManagerStore",
    },
}
# Registered in-process, e.g. by tests; same rules as entry points.
_EXTRA: dict[str, dict[str, type[Any]]] = {"target": {}, "store": {}}


@cache
def _discovered(kind: str) -> dict[str, Any]:
    from importlib.metadata import entry_points

    found: dict[str, Any] = {}
    for ep in entry_points(group=GROUPS[kind]):
        seen = found[ep.name].value if ep.name in found else BUILT_IN[kind].get(ep.name)
        if seen is not None and seen != ep.value:
            raise PluginError(
                f"two {kind} plugins are named {ep.name!r} ({seen} and {ep.value}); uninstall one"
            )
        found[ep.name] = ep
    return found


def register(kind: str, cls: type[Any]) -> None:
    """Register a plugin class in-process (third parties use entry points instead)."""
    name = cls.name
    if name in BUILT_IN[kind] or name in _discovered(kind) or name in _EXTRA[kind]:
        raise PluginError(f"a {kind} plugin named {name!r} is already registered")
    _EXTRA[kind][name] = cls


def unregister(kind: str, name: str) -> None:
    _EXTRA[kind].pop(name, None)


def names(kind: str) -> list[str]:
    return sorted({*BUILT_IN[kind], *_discovered(kind), *_EXTRA[kind]})


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
    value = BUILT_IN[kind].get(name)
    try:
        if value is not None:
            module, _, attr = value.partition(":")
            cls = getattr(importlib.import_module(module), attr)
        else:
            ep = _discovered(kind).get(name)
            if ep is None:
                raise PluginMissing(
                    f"no {kind} type {name!r}; installed: {', '.join(names(kind)) or 'none'}"
                )
            value, cls = ep.value, ep.load()
    except ImportError as exc:
        extra = getattr(exc, "name", None) or "its dependencies"
        raise PluginMissing(
            f"the {kind} type {name!r} needs {extra}: pip install 'keyturn[all]'"
        ) from exc
    if getattr(cls, "name", None) != name:
        raise PluginError(f"{kind} plugin {value} declares name {cls.name!r}, not {name!r}")
    loaded: type[Any] = cls
    return loaded
