"""`keyturn consumers ID`: who uses a credential, which version, since when; `--at-risk`
names the consumers a revoke or an emergency rotation would break."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

import typer

from keyturn.cli import output, remote
from keyturn.cli.main import app, open_app
from keyturn.cli.options import Json
from keyturn.db import repo
from keyturn.domain.errors import UsageError
from keyturn.domain.ids import validate_id
from keyturn.engine import consumers as engine

COLUMNS = ("consumer", "version", "last seen", "host", "process", "sdk", "fallbacks")


def rows(ctx: typer.Context, credential_id: str, at_risk: str | None) -> list[dict[str, Any]]:
    """The consumers (or those at risk), locally or over the API, in the API's shape."""
    api = remote.connect(ctx)
    if api is not None:
        params = {"at_risk": at_risk} if at_risk else None
        path = f"/credentials/{validate_id(credential_id)}/consumers"
        return list(api.call("GET", path, params=params))
    instance = open_app(ctx)
    if at_risk is not None:
        return [asdict(r) for r in engine.at_risk(instance, credential_id, at_risk)]  # type: ignore[arg-type]
    with instance.db.read() as session:
        repo.get_credential(session, credential_id)
        return [
            {
                "name": c.name,
                "version": c.version,
                "last_seen_at": c.last_seen_at,
                "host": c.host,
                "process": c.process,
                "sdk_version": c.sdk_version,
                "fallbacks": c.fallbacks or 0,
            }
            for c in repo.consumers(session, credential_id)
        ]


def preview(ctx: typer.Context, credential_id: str, action: str) -> None:
    """Before a revoke or an emergency rotation: say on stderr who would break."""
    found = rows(ctx, credential_id, action)
    if not found:
        return
    names = ", ".join(
        f"{r['name']} ({r['why']}{'; the SDK refetches' if r['recovers'] else ''})" for r in found
    )
    output.warn(f"{credential_id}: consumers that would break: {names}")


@app.command()
def consumers(
    ctx: typer.Context,
    credential_id: Annotated[str, typer.Argument(metavar="ID")],
    at_risk: Annotated[
        str | None,
        typer.Option(
            "--at-risk",
            metavar="revoke|emergency",
            help="Only the consumers this action would break, and why",
        ),
    ] = None,
    json: Json = False,
) -> None:
    """Who uses a credential: the version each consumer reports and when it was last seen."""
    validate_id(credential_id)
    if at_risk not in (None, "revoke", "emergency"):
        raise UsageError("--at-risk takes `revoke` or `emergency`")
    found = rows(ctx, credential_id, at_risk)
    if json:
        output.emit_json(found)
    elif at_risk is not None:
        if not found:
            output.say(f"no consumer of {credential_id} would break on {at_risk}")
            return
        output.table(
            f"{credential_id}: would break on {at_risk}",
            ("consumer", "version", "last seen", "why"),
            [[r["name"], r["version"], output.when(r["last_seen_at"]), r["why"]] for r in found],
        )
    elif not found:
        output.say(f"no consumer of {credential_id} has registered or reported yet")
    else:
        output.table(
            credential_id,
            COLUMNS,
            [
                [
                    r["name"],
                    r["version"],
                    output.when(r["last_seen_at"]),
                    r["host"],
                    r["process"],
                    r["sdk_version"],
                    r["fallbacks"],
                ]
                for r in found
            ],
        )
