"""`keyturn accounts`: which credential owns which account on which target."""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy import select

from keyturn.cli import output
from keyturn.cli.main import app, open_app
from keyturn.db.models import Account, Credential
from keyturn.domain.ids import validate_name

Json = Annotated[bool, typer.Option("--json", help="Machine-readable output")]


@app.command("accounts")
def accounts(
    ctx: typer.Context,
    target: Annotated[str | None, typer.Option(help="Only this target")] = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant")] = None,
    disputed: Annotated[
        bool,
        typer.Option(
            "--disputed",
            help="Only credentials held back because their account belongs to another",
        ),
    ] = False,
    json: Json = False,
) -> None:
    """Accounts on targets and the credential each belongs to.

    --disputed lists the credentials held back because they were found sharing an account
    with another when the database was upgraded."""
    for what, value in (("target", target), ("tenant", tenant)):
        if value is not None:
            validate_name(value, what)
    instance = open_app(ctx)
    with instance.db.read() as session:
        if disputed:
            query = select(Credential).where(Credential.dispute.is_not(None))
            if tenant:
                query = query.where(Credential.tenant_id == tenant)
            rows = [
                {"credential": c.id, "tenant": c.tenant_id, "dispute": c.dispute}
                for c in session.execute(query.order_by(Credential.id)).scalars()
            ]
        else:
            found = select(Account).order_by(Account.target, Account.account)
            if target:
                found = found.where(Account.target == target)
            if tenant:
                found = found.where(Account.tenant_id == tenant)
            rows = [
                {
                    "target": a.target,
                    "account": a.username,
                    "credential": a.credential_id,
                    "tenant": a.tenant_id,
                }
                for a in session.execute(found).scalars()
            ]
    if json:
        output.emit_json(rows)
        return
    columns = ["credential", "tenant", "dispute"] if disputed else ["target", "account"]
    if not disputed:
        columns += ["credential", "tenant"]
    output.table(None, columns, [[r[c] for c in columns] for r in rows])
