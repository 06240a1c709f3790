"""`keyturn import`: bring secrets that already live in a store into the inventory.

Each secret found under a prefix (a KV folder, a name prefix) becomes a credential, by an
explicit mapping (path -> id, tenant, kind, owner) or by defaults and an id template. Its
value is encrypted and committed at once, as version 1 (`current`), in the transaction that
creates the credential; it is printed nowhere. An import is idempotent: a credential whose
current value already equals the store's is left alone, and one whose value differs is
reported, never replaced (that is drift: rotate it, or look at who changed it).

When the store is one declared in the inventory, the credential is linked to it and the
store's mark recorded, so the next rotation publishes there with check-and-set.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from keyturn.app import Keyturn
from keyturn.audit import log as audit
from keyturn.db import repo
from keyturn.db.models import Credential, StoreMark, Version, utcnow
from keyturn.domain.errors import InvalidId, UsageError
from keyturn.domain.ids import validate_id, validate_name
from keyturn.domain.model import Secret, VersionState
from keyturn.stores.base import Found, Store


@dataclass(frozen=True)
class Rule:
    """Where one secret goes: its credential id and inventory fields."""

    id: str
    tenant: str
    kind: str
    owner: str = ""
    purpose: str = ""


@dataclass(frozen=True)
class Defaults:
    """The mapping for secrets not listed explicitly (from flags or the TOML's [defaults])."""

    tenant: str | None = None
    kind: str | None = None
    owner: str = ""
    purpose: str = ""
    id_template: str = "{tenant}/{path}"
    listed: dict[str, Rule] = field(default_factory=dict)
    only_listed: bool = False


@dataclass(frozen=True)
class Planned:
    path: str
    credential_id: str | None
    action: str  # create | unchanged | differs | skip
    detail: str = ""


def _slug(path: str) -> str:
    """A store path as id segments: lower case, [a-z0-9._-] only."""
    segments = [re.sub(r"[^a-z0-9._-]+", "-", s.lower()).strip("-") for s in path.split("/")]
    return "/".join(s for s in segments if s)


def _relative(path: str, head: str) -> str:
    """*path* below *head*: a folder (`secret/acme` -> `db`) or a name prefix that ends at
    a separator (`APP_` -> `DB`). A prefix that is part of the name (`EMAIL_HOST_PASSWORD`
    for it and `EMAIL_HOST_PASSWORD_OLD`) leaves the whole name, not `_OLD`."""
    rest = path.removeprefix(head)
    if rest == path or not (head.endswith(("_", "-", ".")) or rest.startswith("/")):
        return path
    return rest.strip("/") or path


def rule_for(found: Found, prefix: str, defaults: Defaults) -> Rule:
    """The explicit rule for *found*, or one made from the defaults."""
    if found.path in defaults.listed:
        return defaults.listed[found.path]
    if defaults.only_listed:
        raise UsageError("not listed in the mapping file")
    if not defaults.tenant or not defaults.kind:
        raise UsageError("give --tenant and --kind (or a mapping file) to name its credential")
    name = _slug(_relative(found.path, prefix.strip("/")))
    ident = defaults.id_template.format(
        tenant=defaults.tenant, path=name, name=name.rsplit("/", 1)[-1]
    )
    return Rule(
        validate_id(ident), defaults.tenant, defaults.kind, defaults.owner, defaults.purpose
    )


def run(
    app: Keyturn,
    found: Iterable[Found],
    prefix: str,
    defaults: Defaults,
    *,
    source: str,
    link: tuple[str, Store] | None = None,
    dry_run: bool = False,
    actor: str = "cli",
) -> list[Planned]:
    """Import every secret in *found*; *link* = (store name, open store) to link them to."""
    out = []
    for item in found:
        try:
            rule = rule_for(item, prefix, defaults)
            validate_name(rule.tenant, "tenant")
            validate_name(rule.kind, "kind")
        except (UsageError, InvalidId) as exc:
            out.append(Planned(item.path, None, "skip", exc.message))
            continue
        action = _plan(app, rule, item.value)
        if action == "create" and not dry_run:
            _create(app, rule, item, source, link, actor)
        out.append(Planned(item.path, rule.id, action))
    return out


def _plan(app: Keyturn, rule: Rule, value: Secret) -> str:
    with app.db.read() as session:
        if session.get(Credential, rule.id) is None:
            return "create"
        current = repo.version_in_state(session, rule.id, VersionState.CURRENT)
        if current is not None and app.vault.reveal(current).reveal() == value.reveal():
            return "unchanged"
        return "differs"


def _create(
    app: Keyturn,
    rule: Rule,
    item: Found,
    source: str,
    link: tuple[str, Store] | None,
    actor: str,
) -> None:
    mark = _mark(link, rule, item.value)
    with app.db.write() as session:
        app.vault.tenant_key(session, rule.tenant)
        stores = [link[0]] if link and mark is not None else []
        session.add(
            Credential(
                id=rule.id,
                tenant_id=rule.tenant,
                kind=rule.kind,
                owner=rule.owner,
                purpose=rule.purpose,
                stores=stores,
            )
        )
        session.flush()
        ciphertext, key_id = app.vault.seal(session, rule.tenant, rule.id, 1, item.value)
        fingerprint = app.vault.fingerprint(item.value)
        session.add(
            Version(
                credential_id=rule.id,
                number=1,
                state=VersionState.CURRENT,
                ciphertext=ciphertext,
                data_key_id=key_id,
                fingerprint=fingerprint,
                activated_at=utcnow(),
            )
        )
        if stores:
            session.add(
                StoreMark(
                    store=stores[0],
                    credential_id=rule.id,
                    version=1,
                    mark=mark or None,
                    status="in-sync",
                    checked_at=utcnow(),
                )
            )
        session.flush()
        repo.refresh_due(session, repo.get_credential(session, rule.id))
        audit.append(
            session,
            actor=actor,
            action="credential.import",
            credential_id=rule.id,
            tenant_id=rule.tenant,
            fingerprint=fingerprint,
            details={"source": source, "path": item.path, "version": 1, "stores": stores},
        )


def _mark(link: tuple[str, Store] | None, rule: Rule, value: Secret) -> str | None:
    """The store's mark of the secret, if the store finds it again under the credential's
    id (its path template maps the id back to where it was found); else None: not linked."""
    if link is None:
        return None
    store = link[1]
    held = store.held(rule.id, rule.tenant)
    again = store.read(rule.id)
    if held is None or again is None or again[1].reveal() != value.reveal():
        return None
    return held.mark or ""
