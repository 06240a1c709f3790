"""Credentials declared over the API go through `keyturn apply`'s own code path.

The body is checked as a keyturn.toml entry would be (strict fields, valid ids and names,
no literal secrets outside `initial_secret.value`), then applied in apply's transaction,
on behalf of the token's tenant if it has one: the grant and ownership rules of
keyturn.inventory.grants hold here exactly as in `keyturn apply --tenant`.

A tenant-scoped token declares ids under its tenant (`acme/...`); any other id answers 404,
whether it exists or not, so POSTing another tenant's id tells nothing about it.

Only two kinds of first value are accepted: a value in the body, and a `keyturn:ID`
reference the caller can see. `env:` and `file:` references would read the *server's*
environment and files (its master key included), so they stay with `keyturn apply`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError

from keyturn.api import schemas as s
from keyturn.api.auth import Principal, visible
from keyturn.api.errors import describe_validation
from keyturn.app import Keyturn
from keyturn.db import repo
from keyturn.db.models import Credential
from keyturn.domain.errors import (
    ConfigInvalid,
    Conflict,
    CredentialNotFound,
    Forbidden,
    UsageError,
)
from keyturn.domain.ids import validate_id, validate_name
from keyturn.domain.model import Secret
from keyturn.inventory import apply as applier
from keyturn.inventory import spec as specs
from keyturn.refs import require_reference
from keyturn.runtime import value_of

# Stands for the body's value inside the spec; it is never a resolvable reference.
_BODY_VALUE = "api-body:initial_secret"
# Ids whose last segment names an action would be shadowed by the action routes.
RESERVED_LAST = frozenset(
    {"secret", "versions", "consumers", "rotate", "resume", "abort", "verify"}
)


def build_spec(body: s.CredentialIn, credential_id: str) -> specs.CredentialSpec:
    validate_id(credential_id)
    if body.id is not None and body.id != credential_id:
        raise UsageError("the id in the body differs from the id in the path")
    data = body.model_dump(exclude={"initial_secret", "id"})
    for what in ("tenant", "policy", "target"):
        if data[what] is not None:
            validate_name(data[what], what)
    for store in body.stores:
        validate_name(store, "store")
    for consumer in body.consumers:
        validate_name(consumer, "consumer name")
    specs.check_literals(data, credential_id)
    if isinstance(body.initial_secret, str):
        require_reference(body.initial_secret, credential_id, "initial_secret")
        if not body.initial_secret.startswith("keyturn:"):
            raise UsageError(
                f'{credential_id}: over the API initial_secret is {{"value": ...}} or a '
                "keyturn:ID reference; env: and file: references are for `keyturn apply`"
            )
    marker = body.initial_secret if isinstance(body.initial_secret, str) else None
    if isinstance(body.initial_secret, s.InitialValue):
        marker = _BODY_VALUE
    try:
        spec = specs.CredentialSpec.model_validate(
            {**data, "id": credential_id, "initial_secret": marker}
        )
    except ValidationError as exc:
        raise ConfigInvalid(f"{credential_id}: {describe_validation(exc.errors())}") from exc
    specs.check_names(specs.Inventory(credentials=[spec]), "request")
    return spec


def _resolver(app: Keyturn, who: Principal, body: s.CredentialIn) -> Callable[[str], Secret]:
    def resolve(ref: str) -> Secret:
        if ref == _BODY_VALUE and isinstance(body.initial_secret, s.InitialValue):
            return Secret(body.initial_secret.value)
        other = ref.removeprefix("keyturn:")
        with app.db.read() as session:
            if visible(session, who, other).dispute:
                # Held back (its account belongs to another credential): its value is not
                # handed out, so it is not copied into a credential the caller can read.
                raise Conflict(
                    f"{other} is held back: its account belongs to another credential "
                    "(`keyturn accounts --disputed`); its value cannot be copied"
                )
            return value_of(app, session, other)

    return resolve


def put(
    app: Keyturn, who: Principal, body: s.CredentialIn, credential_id: str, *, create: bool
) -> s.ChangeOut:
    """Create (create=True) or update one credential as `keyturn apply` would."""
    spec = build_spec(body, credential_id)
    if create and credential_id.rsplit("/", 1)[-1] in RESERVED_LAST:
        raise UsageError(
            f"{credential_id}: the last segment of an id must not be one of "
            f"{', '.join(sorted(RESERVED_LAST))} over the API (the action routes use them)"
        )
    if create and who.tenant is not None and not credential_id.startswith(f"{who.tenant}/"):
        raise CredentialNotFound(
            f"no credential {credential_id!r}: a token of tenant {who.tenant!r} declares ids "
            f"under {who.tenant}/"
        )
    # An update first proves the caller may see the credential (404 otherwise).
    _check_existing(app, who, spec, body, create=create)
    if not who.sees_tenant(spec.tenant_id):
        raise Forbidden(f"this token is limited to tenant {who.tenant!r}")
    inv = specs.Inventory(credentials=[spec])
    try:
        result = applier.apply(
            app,
            inv,
            Path.cwd(),
            actor=who.actor,
            resolve=_resolver(app, who, body),
            tenant=who.tenant,
        )
    except IntegrityError as exc:  # e.g. a concurrent create of the same id
        raise Conflict(f"{credential_id} changed concurrently; try again") from exc
    return s.ChangeOut(
        credential=credential_id,
        changes=[c.describe() for c in result.changes],
        provisioned=credential_id in result.provisioned,
        problems=result.problems,
    )


def _check_existing(
    app: Keyturn, who: Principal, spec: specs.CredentialSpec, body: s.CredentialIn, *, create: bool
) -> None:
    with app.db.read() as session:
        if create:
            found = session.get(Credential, spec.id)
            if found is not None and not who.sees(found):
                raise CredentialNotFound(f"no credential {spec.id!r}")
            if found is not None:
                raise Conflict(f"{spec.id} exists; PUT /api/v1/credentials/{spec.id} updates it")
            return
        cred = visible(session, who, spec.id)
        if cred.tenant_id != spec.tenant_id:
            raise Conflict(f"{spec.id} belongs to tenant {cred.tenant_id!r}; it cannot move")
        if body.initial_secret is not None and repo.versions(session, spec.id):
            raise Conflict(f"{spec.id} has a value already; rotate it instead")
