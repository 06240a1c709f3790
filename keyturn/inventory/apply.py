"""`keyturn apply`: make the database match an inventory file, idempotently.

Everything the file declares is validated, and every initial secret resolved, before the one
transaction that writes it; a failure leaves the database as it was. Credentials that are in
the database but not in the file are kept (and counted). New initial values are committed
first, and only then written to their targets (store before change).

A value that could not be provisioned (the target was down, its admin password did not
resolve) is marked `unprovisioned` (the credential's sync status); every later apply tries
again, with the stored value, until it works: fixing the file and re-running apply is the
way out, never a dead end.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyturn import plugins
from keyturn.app import Keyturn
from keyturn.audit import log as audit
from keyturn.db import repo
from keyturn.db.models import (
    Channel,
    Consumer,
    Credential,
    Policy,
    StoreRow,
    TargetRow,
    Tenant,
)
from keyturn.domain.errors import (
    ConfigInvalid,
    Conflict,
    CredentialNotFound,
    KeyturnError,
    PluginMissing,
    TargetNotFound,
)
from keyturn.domain.inputs import first_error
from keyturn.domain.model import Secret, VersionState
from keyturn.inventory import grants
from keyturn.inventory.grants import Claims
from keyturn.inventory.spec import CredentialSpec, Inventory, StoreSpec, TargetSpec
from keyturn.notify import channels
from keyturn.runtime import open_target, resolver
from keyturn.targets.base import Account


@dataclass(frozen=True)
class Change:
    action: str  # create | update | secret
    kind: str  # policy | target | store | credential | consumer
    name: str
    fields: tuple[str, ...] = ()

    def describe(self) -> str:
        extra = f" ({', '.join(self.fields)})" if self.fields else ""
        return f"{self.action} {self.kind} {self.name}{extra}"


@dataclass
class ApplyResult:
    changes: list[Change] = field(default_factory=list)
    unmanaged: int = 0
    provisioned: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # New values stored for accounts that already existed on their target (left untouched):
    # nothing has proven that the target takes them (`keyturn verify` logs in to check).
    existing: list[str] = field(default_factory=list)
    # Values to write to targets after the commit: new initial values, and stored values of
    # credentials an earlier apply could not provision.
    initial: dict[str, Secret] = field(default_factory=dict, repr=False)


T = TypeVar("T")
UNPROVISIONED = "unprovisioned"


def _validate_plugins(inv: Inventory, base_dir: Path) -> None:
    for name, spec in inv.channels.items():
        channels.validate(name, spec.type, spec.settings())
    for name, spec in inv.targets.items():
        cls = _named("target", name, plugins.load_target, spec.type)
        try:
            cls.config_model.model_validate(spec.settings())
        except ConfigInvalid as exc:
            raise type(exc)(f"target {name!r} ({spec.type}): {exc.message}") from exc
        except ValueError as exc:
            raise ConfigInvalid(f"target {name!r} ({spec.type}): {first_error(exc)}") from exc
    for name, spec in inv.stores.items():
        store_cls = _named("store", name, plugins.load_store, spec.type)
        try:
            store_cls.config_model.model_validate(spec.settings())
        except ValueError as exc:
            raise ConfigInvalid(f"store {name!r} ({spec.type}): {first_error(exc)}") from exc


def _named(kind: str, name: str, load: Callable[[str], T], type_name: str) -> T:
    """The plugin class of `[{kind}s.{name}]`; a missing one says which table asked for it."""
    try:
        return load(type_name)
    except PluginMissing as exc:
        raise PluginMissing(f"[{kind}s.{name}]: {exc.message}") from exc


def _check_target(claims: Claims, session: Session, inv: Inventory, cred: CredentialSpec) -> None:
    name = cred.target
    assert name is not None
    spec = inv.targets.get(name)
    row = session.get(TargetRow, name)
    if spec is None and row is None:
        if claims.scope is not None:
            claims.check_target(cred.id, cred.tenant_id, name, None)
        raise TargetNotFound(f"{cred.id}: no target {name!r}; declare [targets.{name}]")
    grant = spec.tenants if spec is not None else row.tenants  # type: ignore[union-attr]
    claims.check_target(cred.id, cred.tenant_id, name, grant)
    target_type = spec.type if spec else row.type  # type: ignore[union-attr]
    cls = plugins.load_target(target_type)
    if cred.strategy not in cls.strategies:
        raise ConfigInvalid(
            f"{cred.id}: target type {target_type!r} supports strategies "
            f"{', '.join(cls.strategies)}, not {cred.strategy!r}"
        )
    if cred.strategy == "dual" and cls.max_active_secrets < 2:
        raise ConfigInvalid(
            f"{cred.id}: strategy 'dual' needs a target that accepts two secrets at once; "
            f"{target_type!r} accepts {cls.max_active_secrets}: use single or alternating"
        )
    if not cred.logins():
        raise ConfigInvalid(f"{cred.id}: a credential with a target needs a username")
    for login in cred.logins():
        claims.check_account(cred.id, cred.tenant_id, name, grant, login)


def _check_refs(session: Session, inv: Inventory, claims: Claims) -> None:
    for cred in inv.credentials:
        if cred.policy and cred.policy not in inv.policies and not session.get(Policy, cred.policy):
            raise ConfigInvalid(
                f"{cred.id}: no policy {cred.policy!r}; declare [policies.{cred.policy}]"
            )
        if cred.target:
            _check_target(claims, session, inv, cred)
        for store in cred.stores:
            spec, row = inv.stores.get(store), session.get(StoreRow, store)
            if spec is None and row is None:
                raise grants.no_store(cred.id, store)
            grant = spec.tenants if spec is not None else row.tenants  # type: ignore[union-attr]
            claims.check_store(cred.id, cred.tenant_id, store, grant)
    _check_dotenv_lines(session, inv)
    _check_file_names(session, inv)


def _store_of(session: Session, inv: Inventory, store: str) -> tuple[str | None, dict[str, Any]]:
    """A store's type and settings: as the inventory declares it, else as stored (None: no
    such store, which `_check_refs` has already refused)."""
    spec, row = inv.stores.get(store), session.get(StoreRow, store)
    if spec is not None:
        return spec.type, spec.settings()
    if row is not None:
        return row.type, dict(row.settings or {})
    return None, {}


def _check_file_names(session: Session, inv: Inventory) -> None:
    """In a file store, NAME.previous and NAME.version sit beside each value: a credential
    whose own file has such a name would share one with another's (keyturn.stores.file)."""
    from keyturn.stores.file import SUFFIXES, relative_path, sidecar_clash

    for cred in inv.credentials:
        for store in cred.stores:
            kind, settings = _store_of(session, inv, store)
            if kind != "file":
                continue
            template = str(settings.get("file") or "{id}")
            if relative_path(template, cred.id, cred.tenant_id).endswith(SUFFIXES):
                raise ConfigInvalid(sidecar_clash(store, cred.id))


def _check_dotenv_lines(session: Session, inv: Inventory) -> None:
    """In a dotenv store, a credential's lines (NAME, NAME_VERSION, NAME_PREVIOUS) are named
    after its id with everything but letters and digits as `_`: `acme/x-db` and tenant
    acme-x's `acme-x/db` are both ACME_X_DB, and a publish of one replaced the other's
    lines. Refuse a credential whose lines another tenant's credential on the store writes."""
    from keyturn.stores.dotenv import variables_of

    declared = {c.id: c for c in inv.credentials}
    held: dict[str, dict[str, tuple[str, str]]] = {}  # store -> line -> (credential, tenant)
    for cred in inv.credentials:
        for store in cred.stores:
            kind, settings = _store_of(session, inv, store)
            if kind != "dotenv":
                continue
            variables = settings.get("variables") or {}
            if store not in held:
                lines: dict[str, tuple[str, str]] = {}
                query = select(Credential.id, Credential.tenant_id, Credential.stores)
                found = [(i, t, s) for i, t, s in session.execute(query) if i not in declared]
                found += [(c.id, c.tenant_id, c.stores) for c in inv.credentials]
                for other, tenant, stores in found:
                    if store in (stores or []):
                        for line in variables_of(variables, other):
                            lines.setdefault(line, (other, tenant))
                held[store] = lines
            for line in variables_of(variables, cred.id):
                other, tenant = held[store].get(line, (cred.id, cred.tenant_id))
                if other != cred.id and tenant != cred.tenant_id:
                    raise ConfigInvalid(
                        f"{cred.id}: store {store!r} has a line {line} of another tenant's "
                        "credential; a dotenv store shared by tenants needs ids whose variables "
                        f"differ (or a name in [stores.{store}] variables)"
                    )


def _check_grants(session: Session, inv: Inventory) -> None:
    """A target's grant may not leave out an account a credential already holds on it, nor
    a store's a credential already published to it."""
    outside: dict[str, list[str]] = {}
    for name in inv.targets:
        row = session.get(TargetRow, name)
        assert row is not None
        outside[f"target {name!r}"] = list(grants.outside_grant(session, row))
    for name in inv.stores:
        store = session.get(StoreRow, name)
        assert store is not None
        outside[f"store {name!r}"] = list(grants.outside_store_grant(session, store))
    for what, found in outside.items():
        if found:
            raise ConfigInvalid(
                f"{what}: its tenants no longer cover {', '.join(found[:3])}"
                f"{' and more' if len(found) > 3 else ''}; move or delete those credentials "
                "first"
            )


def _diff(row: Any, wanted: dict[str, Any]) -> tuple[str, ...]:
    return tuple(k for k, v in wanted.items() if getattr(row, k) != v)


def _upsert(
    session: Session,
    model: Any,
    key: Any,
    wanted: dict[str, Any],
    kind: str,
    name: str,
    out: list[Change],
) -> None:
    row = session.get(model, key)
    if row is None:
        session.add(model(**wanted))
        out.append(Change("create", kind, name))
        return
    changed = _diff(row, wanted)
    if changed:
        for k in changed:
            setattr(row, k, wanted[k])
        out.append(Change("update", kind, name, changed))


def _credential_fields(cred: CredentialSpec) -> dict[str, Any]:
    return {
        "id": cred.id,
        "tenant_id": cred.tenant_id,
        "kind": cred.kind,
        "owner": cred.owner,
        "purpose": cred.purpose,
        "tags": cred.tag_dict(),
        "policy": cred.policy,
        "target": cred.target,
        "strategy": cred.strategy,
        "stores": list(cred.stores),
        "usernames": cred.logins(),
    }


def apply(
    app: Keyturn,
    inv: Inventory,
    base_dir: Path,
    *,
    dry_run: bool = False,
    actor: str = "cli",
    resolve: Callable[[str], Secret] | None = None,
    on_provision: Callable[[str, int], None] | None = None,
    tenant: str | None = None,
    env: Collection[str] = (),
) -> ApplyResult:
    """Apply *inv*; *resolve* turns initial-secret references into values (default: env:,
    file: relative to *base_dir*, keyturn:). *on_provision(credential_id, total)* is called
    as each value is written to its target (for a progress bar). With *tenant*, apply on
    behalf of that tenant (a tenant-scoped token, `keyturn apply --tenant`): the file may
    declare only credentials of that tenant, on targets granted to it, copying only its own
    credentials' values, reading only the variables in *env* (the operator names them)."""
    if tenant is not None:
        _check_scoped(inv, tenant)
    base = str(base_dir.resolve())
    _validate_plugins(inv, base_dir)
    result = ApplyResult()
    resolve = resolve or resolver(app, base)
    if tenant is not None:
        resolve = _within(app, tenant, Path(base), resolve, frozenset(env))
    try:
        _apply_in_transaction(app, inv, base, resolve, result, dry_run, actor, tenant)
    except _DryRun:
        return result
    _provision(app, inv, result, actor, on_provision)
    return result


def _check_scoped(inv: Inventory, tenant: str) -> None:
    for section in ("settings", "tenants", "channels", "policies", "targets", "stores"):
        if getattr(inv, section):
            raise ConfigInvalid(
                f"an apply for tenant {tenant!r} declares credentials only; [{section}] is "
                "for an unscoped apply"
            )
    for cred in inv.credentials:
        if cred.tenant_id != tenant or not cred.id.startswith(f"{tenant}/"):
            raise ConfigInvalid(
                f"{cred.id}: an apply for tenant {tenant!r} declares ids under {tenant}/ in "
                f"tenant {tenant!r} only"
            )


def _within(
    app: Keyturn,
    tenant: str,
    base: Path,
    resolve: Callable[[str], Secret],
    env: frozenset[str] = frozenset(),
) -> Callable[[str], Secret]:
    """*resolve*, refusing what a tenant's file may not read: `keyturn:` references to
    other tenants' credentials, keyturn's own variables (`env:KEYTURN_MASTER_KEY`), files
    outside the inventory file's folder (`file:/etc/shadow`, `file:../globex/pw`). The
    value becomes a credential of the tenant, which its tokens read."""

    def scoped(ref: str) -> Secret:
        scheme, _, rest = ref.partition(":")
        if scheme == "env" and rest.startswith("KEYTURN_"):
            raise ConfigInvalid(
                f"{ref}: an apply for tenant {tenant!r} does not read keyturn's own "
                "settings (KEYTURN_*)"
            )
        if scheme == "env" and rest not in env:
            # The shell is the operator's (cloud keys, other tenants' values): a tenant's
            # file reads only what the operator hands it, as a tenant's token reads none.
            raise ConfigInvalid(
                f"{ref}: an apply for tenant {tenant!r} reads only the variables named with "
                f"--env (add `--env {rest}` to hand it over)"
            )
        if scheme == "file":
            path = Path(rest).expanduser()
            path = (path if path.is_absolute() else base / path).resolve()
            if not path.is_relative_to(base.resolve()):
                raise ConfigInvalid(
                    f"{ref}: an apply for tenant {tenant!r} reads files in the inventory "
                    f"file's folder ({base}) only"
                )
            return resolve(f"file:{path}")  # the path checked, not a link changed since
        if ref.startswith("keyturn:"):
            with app.db.read() as session:
                other = session.get(Credential, ref.removeprefix("keyturn:"))
                if other is None or other.tenant_id != tenant:
                    raise CredentialNotFound(f"no credential {ref.removeprefix('keyturn:')!r}")
        return resolve(ref)

    return scoped


def _copied(session: Session, ref: str, copy: str, actor: str) -> None:
    """A `keyturn:SOURCE` first value is a read of SOURCE: refused when SOURCE is held back
    (its value is not handed out, so not copied into a credential that is), and recorded
    as `secret.read` of SOURCE, as `keyturn get` records one. After *resolve*, which has
    already answered a reference the caller may not follow."""
    if not ref.startswith("keyturn:"):
        return
    source_id = ref.removeprefix("keyturn:")
    source = repo.get_credential(session, source_id)
    if source.dispute:
        raise Conflict(
            f"{source_id} is held back: its account belongs to another credential "
            "(`keyturn accounts --disputed`); its value cannot be copied"
        )
    version = repo.version_in_state(session, source_id, VersionState.CURRENT)
    audit.append(
        session,
        actor=actor,
        action="secret.read",
        credential_id=source_id,
        tenant_id=source.tenant_id,
        fingerprint=version.fingerprint if version else None,
        details={
            "version": version.number if version else None,
            "state": "current",
            "copied_to": copy,
        },
    )


class _DryRun(Exception):
    """Raised to roll back the transaction of a dry run."""


def _apply_in_transaction(
    app: Keyturn,
    inv: Inventory,
    base: str,
    resolve: Callable[[str], Secret],
    result: ApplyResult,
    dry_run: bool,
    actor: str,
    tenant: str | None,
) -> None:
    with app.db.write() as session:
        claims = Claims(session, tenant)
        _check_refs(session, inv, claims)
        initial: dict[str, Secret] = {}
        for cred in inv.credentials:
            existing = session.get(Credential, cred.id)
            if tenant is not None and existing is not None and existing.tenant_id != tenant:
                raise Conflict(f"{cred.id} is not a credential of tenant {tenant!r}")
            if cred.initial_secret and (existing is None or not repo.versions(session, cred.id)):
                initial[cred.id] = resolve(cred.initial_secret)
                _copied(session, cred.initial_secret, cred.id, actor)
        changes = result.changes
        _declare_settings(app, session, inv, base, changes)
        _declare_credentials(app, session, inv, claims, changes)
        _check_grants(session, inv)
        for cred_id, value in initial.items():
            changes.append(Change("secret", "credential", cred_id, ("initial value",)))
            _store_initial(app, session, cred_id, value, actor)
        session.flush()
        for cred_id, value in _unprovisioned(app, session, inv, initial).items():
            changes.append(Change("provision", "credential", cred_id, ("retry",)))
            initial[cred_id] = value
        for cred in inv.credentials:
            repo.refresh_due(session, repo.get_credential(session, cred.id))
        all_ids = {c.id for c in repo.list_credentials(session, tenant)}
        result.unmanaged = len(all_ids - {c.id for c in inv.credentials})
        if dry_run:
            raise _DryRun
        _record(session, inv, changes, actor)
        result.initial = initial


def _declare_settings(
    app: Keyturn, session: Session, inv: Inventory, base: str, changes: list[Change]
) -> None:
    """Policies, targets, stores, channels and tenants, as the file declares them."""
    for name, policy in inv.policies.items():
        declared = {"name": name, "settings": policy.model_dump(exclude_none=True)}
        _upsert(session, Policy, name, declared, "policy", name, changes)
    for model, kind, specs in (
        (TargetRow, "target", inv.targets),
        (StoreRow, "store", inv.stores),
        (Channel, "channel", inv.channels),
    ):
        for name, spec in specs.items():
            wanted: dict[str, Any] = {
                "name": name,
                "type": spec.type,
                "settings": spec.settings(),
                "base_dir": base,
            }
            if isinstance(spec, TargetSpec | StoreSpec):
                wanted["tenants"] = spec.tenants
            _upsert(session, model, name, wanted, kind, name, changes)
    session.flush()
    for name, tenant_spec in inv.tenants.items():
        app.vault.tenant_key(session, name)
        tenant = session.get(Tenant, name)
        assert tenant is not None
        if list(tenant.recipients) != tenant_spec.recipients:
            tenant.recipients = list(tenant_spec.recipients)
            changes.append(Change("update", "tenant", name, ("recipients",)))


def _declare_credentials(
    app: Keyturn, session: Session, inv: Inventory, claims: Claims, changes: list[Change]
) -> None:
    """Credentials and their consumers; each credential claims its accounts."""
    for cred in inv.credentials:
        app.vault.tenant_key(session, cred.tenant_id)
        fields = _credential_fields(cred)
        _upsert(session, Credential, cred.id, fields, "credential", cred.id, changes)
        for consumer in cred.consumers:
            if not any(c.name == consumer for c in repo.consumers(session, cred.id)):
                session.add(Consumer(credential_id=cred.id, name=consumer))
                changes.append(Change("create", "consumer", f"{cred.id}:{consumer}"))
    session.flush()
    for cred in inv.credentials:
        claims.claim(repo.get_credential(session, cred.id))


def _record(session: Session, inv: Inventory, changes: list[Change], actor: str) -> None:
    tenants = {c.id: c.tenant_id for c in inv.credentials}
    for change in changes:
        credential = None
        if change.kind in ("credential", "consumer"):
            credential = change.name.split(":", 1)[0]
        audit.append(
            session,
            actor=actor,
            action=f"inventory.{change.action}",
            credential_id=credential,
            tenant_id=tenants.get(credential or ""),
            details={"kind": change.kind, "name": change.name, "fields": list(change.fields)},
        )


def _unprovisioned(
    app: Keyturn, session: Session, inv: Inventory, new: dict[str, Secret]
) -> dict[str, Secret]:
    """Current values of the file's credentials that an earlier apply failed to provision."""
    out = {}
    for cred in inv.credentials:
        row = session.get(Credential, cred.id)
        if cred.id in new or row is None or row.sync_status != UNPROVISIONED or not cred.target:
            continue
        current = repo.version_in_state(session, cred.id, VersionState.CURRENT)
        if current is not None:
            out[cred.id] = app.vault.reveal(current)
    return out


def _store_initial(app: Keyturn, session: Session, cred_id: str, value: Secret, actor: str) -> None:
    cred = repo.get_credential(session, cred_id)
    logins = cred.usernames or [None]
    version = app.vault.new_version(
        session,
        cred,
        value,
        state=VersionState.CURRENT,
        username=logins[0],
        validity=_validity(session, cred, value),
    )
    number, fp = version.number, version.fingerprint
    cred.sync_status = None
    audit.append(
        session,
        actor=actor,
        action="version.import",
        credential_id=cred_id,
        tenant_id=cred.tenant_id,
        fingerprint=fp,
        details={"version": number, "state": "current"},
    )


def _validity(
    session: Session, cred: Credential, value: Secret
) -> tuple[datetime, datetime] | None:
    """An imported certificate's validity (the target type says; None for passwords)."""
    row = session.get(TargetRow, cred.target or "")
    if row is None:
        return None
    return plugins.load_target(row.type).validity(value)


def _provision(
    app: Keyturn,
    inv: Inventory,
    result: ApplyResult,
    actor: str,
    on_provision: Callable[[str, int], None] | None = None,
) -> None:
    """Write new initial values into their targets where the login does not exist yet."""
    todo = [c for c in inv.credentials if c.id in result.initial and c.target]
    for cred in todo:
        try:
            created = _ensure(app, cred, result.initial[cred.id])
        except KeyturnError as exc:
            _mark(app, cred.id, UNPROVISIONED)
            result.problems.append(
                f"{cred.id}: stored, but not provisioned on its target: {exc.message}; fix "
                "that and run `keyturn apply` again (it retries)"
            )
            continue
        finally:
            if on_provision:
                on_provision(cred.id, len(todo))
        _mark(app, cred.id, None)
        if not created:
            result.existing.append(cred.id)
        if created:
            result.provisioned.append(cred.id)
            with app.db.write() as session:
                audit.append(
                    session,
                    actor=actor,
                    action="target.provision",
                    credential_id=cred.id,
                    tenant_id=cred.tenant_id,
                    fingerprint=app.vault.fingerprint(result.initial[cred.id]),
                )


def _ensure(app: Keyturn, cred: CredentialSpec, value: Secret) -> bool:
    with app.db.read() as session:
        row = session.get(TargetRow, cred.target)
        assert row is not None
    target = open_target(app, row)
    try:
        return target.ensure(Account(cred.logins()[0]), value)
    finally:
        target.close()


def _mark(app: Keyturn, cred_id: str, status: str | None) -> None:
    """Record (or clear) that the credential's value is not on its target yet."""
    with app.db.write() as session:
        cred = repo.get_credential(session, cred_id)
        if status is not None or cred.sync_status == UNPROVISIONED:
            cred.sync_status = status
