"""Helpers several database targets share (not a target: no target imports another's module)."""

from __future__ import annotations

from typing import Any

from keyturn.domain.errors import ConfigInvalid

# Characters that break connection URLs and DSNs when a consumer pastes the value in one.
DSN_UNSAFE = "@:/?#%'\"\\ "


def require_admin_password(config: Any) -> Any:
    """An `admin_user` without `admin_password` is refused: it would be silently ignored,
    and keyturn would log in as each account instead (a model validator, after fields)."""
    if config.admin_user and not config.admin_password:
        raise ConfigInvalid(
            f"admin_user {config.admin_user!r} is set without admin_password: add "
            'admin_password = "env:NAME" (or file:PATH, keyturn:ID), or remove admin_user '
            "to let keyturn log in as each account with its current password"
        )
    return config
