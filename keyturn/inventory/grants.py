"""Who may put a credential on which account of which target.

Two rules, the same through the API, `keyturn apply` and `keyturn apply --tenant`:

1. **Grants.** A target declares the tenants that may use it (`tenants` in its table):
   a list of tenant names (each may use any account on it) or a table of account globs per
   tenant (`acme = ["*@acme.example"]`), for a target several tenants share. A target that
   declares nothing is for unscoped admins only: they may put any tenant's credential on it,
   a tenant-scoped caller may not put one there at all. A store declares the tenants whose
   credentials it may hold the same way (a list of names), with the same default.
2. **Ownership.** An account (target + username; both usernames of an alternating
   credential) belongs to exactly one credential: the `accounts` table, unique on
   (target, account), so a second claim fails in the database even if two requests race.

A tenant-scoped caller is refused without learning anything about other tenants: a target not
granted to it answers exactly like a target that does not exist, and an account outside its
grant exactly like an account another tenant holds (404, `target_not_found`); a store not
granted to it exactly like a store that does not exist (400, `config_invalid`).

Account names are compared normalised (NFKC, trimmed, case-folded), so `Admin@Globex.example`
is the same account as `admin@globex.example`: on a server that folds case they are, and
where one does not, refusing a near-duplicate costs nothing.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from fnmatch import fnmatchcase
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from keyturn.db.models import Account, Credential, StoreRow, TargetRow
from keyturn.domain.errors import AccountTaken, ConfigInvalid, TargetNotFound
from keyturn.domain.ids import validate_name
from keyturn.domain.inputs import text_problem

Grant = list[str] | dict[str, list[str]] | None
MAX_GLOBS = 64


def account_key(username: str) -> str:
    """The name an account is compared by (the migration keeps a frozen copy)."""
    return unicodedata.normalize("NFKC", username).strip().casefold()


def check_grant(grant: Any, where: str) -> Grant:
    """A `tenants` declaration, validated: tenant names, and 1-64 account globs each."""
    if grant is None:
        return None
    if isinstance(grant, list):
        return [validate_name(str(t), "tenant") for t in grant]
    if not isinstance(grant, dict):
        raise ConfigInvalid(f"{where}: tenants is a list of tenants or a table of account globs")
    out: dict[str, list[str]] = {}
    for tenant, globs in grant.items():
        validate_name(str(tenant), "tenant")
        if not isinstance(globs, list) or not 1 <= len(globs) <= MAX_GLOBS:
            raise ConfigInvalid(f"{where}: tenants.{tenant} is a list of 1-{MAX_GLOBS} globs")
        for glob in globs:
            if not isinstance(glob, str) or not glob.strip() or text_problem(glob):
                raise ConfigInvalid(f"{where}: tenants.{tenant} holds an empty or invalid glob")
        out[str(tenant)] = [str(g) for g in globs]
    return out


def tenants_of(grant: Grant) -> list[str]:
    if grant is None:
        return []
    return list(grant) if isinstance(grant, list) else sorted(grant)


def grants(grant: Grant, tenant: str, username: str | None = None) -> bool:
    """Whether *grant* lets *tenant* use the target (and, if given, that account on it)."""
    if grant is None or tenant not in grant:
        return False
    if isinstance(grant, list) or username is None:
        return True
    key = account_key(username)
    return any(fnmatchcase(key, account_key(glob)) for glob in grant[tenant])


def holder(session: Session, target: str, username: str) -> Account | None:
    return session.execute(
        select(Account).where(Account.target == target, Account.account == account_key(username))
    ).scalar_one_or_none()


def no_store(cred_id: str, store: str) -> ConfigInvalid:
    """A store that does not exist, and to a tenant one not granted to it: the same words."""
    return ConfigInvalid(f"{cred_id}: no store {store!r}; declare [stores.{store}]")


class Claims:
    """The grant and ownership checks of one apply, for an unscoped or a tenant's caller."""

    def __init__(self, session: Session, scope: str | None) -> None:
        self.session, self.scope = session, scope

    def _hidden(self, cred_id: str, target: str, username: str | None = None) -> TargetNotFound:
        if username is None:
            return TargetNotFound(f"{cred_id}: no target {target!r}")
        return TargetNotFound(
            f"{cred_id}: target {target!r} has no account {username!r} for tenant {self.scope!r}"
        )

    def check_target(self, cred_id: str, tenant: str, target: str, grant: Grant) -> None:
        """Refuse a target the credential's tenant may not use (before anything is written)."""
        if self.scope is not None:
            if not grants(grant, self.scope):
                raise self._hidden(cred_id, target)
            return
        if grant is not None and tenant not in grant:
            shown = ", ".join(tenants_of(grant)) or "no tenant"
            raise ConfigInvalid(
                f"{cred_id}: target {target!r} is not granted to tenant {tenant!r} (its "
                f"tenants: {shown}); add {tenant!r} to [targets.{target}] tenants"
            )

    def check_store(self, cred_id: str, tenant: str, store: str, grant: list[str] | None) -> None:
        """Refuse a store the credential's tenant may not publish to: to a tenant's caller,
        exactly as if there were no such store."""
        if self.scope is not None:
            if grant is None or self.scope not in grant:
                raise no_store(cred_id, store)
            return
        if grant is not None and tenant not in grant:
            shown = ", ".join(grant) or "no tenant"
            raise ConfigInvalid(
                f"{cred_id}: store {store!r} is not granted to tenant {tenant!r} (its "
                f"tenants: {shown}); add {tenant!r} to [stores.{store}] tenants"
            )

    def check_account(
        self, cred_id: str, tenant: str, target: str, grant: Grant, user: str
    ) -> None:
        """Refuse an account outside what the target grants the credential's tenant."""
        if grant is None or grants(grant, tenant, user):
            return
        if self.scope is not None:
            raise self._hidden(cred_id, target, user)
        globs = ", ".join(grant[tenant]) if isinstance(grant, dict) else ""
        raise ConfigInvalid(
            f"{cred_id}: account {user!r} on target {target!r} is outside what the target "
            f"grants tenant {tenant!r} ({globs})"
        )

    def claim(self, cred: Credential) -> None:
        """Make the credential's accounts its own; release the ones it no longer declares."""
        wanted = {}
        if cred.target:
            wanted = {account_key(str(u)): str(u) for u in cred.usernames or [] if u}
        mine = self.session.execute(
            select(Account).where(Account.credential_id == cred.id)
        ).scalars()
        for row in list(mine):
            if row.target != cred.target or row.account not in wanted:
                self.session.delete(row)
            else:
                wanted.pop(row.account)
        self.session.flush()
        for username in wanted.values():
            assert cred.target is not None
            self._take(cred, cred.target, username)
        cred.dispute = None

    def _take(self, cred: Credential, target: str, username: str) -> None:
        found = holder(self.session, target, username)
        if found is not None:
            raise self._taken(cred.id, target, username, found)
        row = Account(
            target=target,
            account=account_key(username),
            username=username,
            credential_id=cred.id,
            tenant_id=cred.tenant_id,
        )
        self.session.add(row)
        try:
            self.session.flush()
        except IntegrityError as exc:  # another transaction claimed it a moment ago
            raise AccountTaken(
                f"{cred.id}: account {username!r} on target {target!r} was just claimed by "
                "another credential"
            ) from exc

    def _taken(self, cred_id: str, target: str, username: str, found: Account) -> Exception:
        if self.scope is not None and found.tenant_id != self.scope:
            return self._hidden(cred_id, target, username)
        return AccountTaken(
            f"{cred_id}: account {username!r} on target {target!r} belongs to "
            f"{found.credential_id}; one account, one credential"
        )


def outside_store_grant(session: Session, store: StoreRow) -> Iterable[str]:
    """Credentials on *store* its declared tenants no longer cover (a narrowed `tenants`)."""
    if store.tenants is None:
        return []
    rows = session.execute(select(Credential.id, Credential.tenant_id, Credential.stores))
    return [
        f"{cred_id} ({tenant})"
        for cred_id, tenant, stores in rows
        if store.name in (stores or []) and tenant not in store.tenants
    ]


def outside_grant(session: Session, target: TargetRow) -> Iterable[str]:
    """Accounts on *target* its declared grant no longer covers (a narrowed `tenants`)."""
    grant = target.tenants
    if grant is None:
        return []
    rows = session.execute(select(Account).where(Account.target == target.name)).scalars()
    return [
        f"{row.credential_id} ({row.tenant_id}, account {row.username!r})"
        for row in rows
        if not grants(grant, row.tenant_id, row.username)
    ]
