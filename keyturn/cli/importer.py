"""`keyturn import --from vault|aws-secretsmanager|conjur|dotenv|file`: existing secrets in.

The source is a store declared in the inventory (`--store NAME`), or settings given here
(`--set url=... --set token=env:VAULT_TOKEN`: secrets only as references). The mapping to
credential ids comes from flags (`--tenant`, `--kind`, `--owner`, `--id-template`) or a TOML
file (`--map`):

    [source]
    from = "vault"
    store = "bao"            # or [source.settings]
    prefix = "secret/acme"

    [defaults]
    tenant = "acme"
    kind = "smtp"

    [[secrets]]              # when present, only the listed paths are imported
    path = "secret/acme/smtp-admin"
    id = "acme/smtp-admin"
    kind = "smtp-mailu"
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer

from keyturn import plugins
from keyturn.cli import output
from keyturn.cli.main import actor, app, open_app
from keyturn.cli.options import Json
from keyturn.db.models import StoreRow
from keyturn.domain.errors import ConfigInvalid, UsageError
from keyturn.domain.ids import validate_name
from keyturn.domain.inputs import first_error
from keyturn.inventory import imports
from keyturn.refs import SECRET_KEY, require_reference
from keyturn.runtime import open_store
from keyturn.stores.base import Store, StoreContext

SOURCES = ("vault", "aws-secretsmanager", "conjur", "dotenv", "file")


def _settings(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--set takes KEY=VALUE, not {pair!r}")
        if SECRET_KEY.search(key):
            require_reference(value, "--set", key)
        out[key] = int(value) if value.isdigit() else value
    return out


def _map_file(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigInvalid(f"{path}: {exc}") from exc


def _defaults(data: dict[str, Any], flags: dict[str, str | None]) -> imports.Defaults:
    base = {**data.get("defaults", {}), **{k: v for k, v in flags.items() if v}}
    listed = {}
    for entry in data.get("secrets", []):
        if "path" not in entry or "id" not in entry:
            raise ConfigInvalid("each [[secrets]] entry needs path and id")
        listed[entry["path"]] = imports.Rule(
            id=entry["id"],
            tenant=entry.get("tenant") or base.get("tenant") or entry["id"].split("/")[0],
            kind=entry.get("kind") or base.get("kind") or "secret",
            owner=entry.get("owner", base.get("owner", "")),
            purpose=entry.get("purpose", base.get("purpose", "")),
        )
    return imports.Defaults(
        tenant=base.get("tenant"),
        kind=base.get("kind"),
        owner=base.get("owner", ""),
        purpose=base.get("purpose", ""),
        id_template=base.get("id_template", "{tenant}/{path}"),
        listed=listed,
        only_listed=bool(listed),
    )


def _source(
    ctx: typer.Context, kind: str, store_name: str | None, settings: dict[str, Any]
) -> tuple[Store, str | None]:
    instance = open_app(ctx)
    if store_name:
        validate_name(store_name, "store")
        with instance.db.read() as session:
            row = session.get(StoreRow, store_name)
        if row is None:
            raise UsageError(f"no store {store_name!r}; declare it with `keyturn apply` first")
        if row.type != kind:
            raise UsageError(f"store {store_name!r} is a {row.type} store, not {kind}")
        store = open_store(instance, row)
        store.context.name = store_name
        return store, store_name
    from keyturn.runtime import resolver

    cls = plugins.load("store", kind)
    context = StoreContext(resolve=resolver(instance, Path.cwd()), base_dir=str(Path.cwd()))
    try:
        return cls.from_settings(settings, context), None
    except ValueError as exc:
        raise ConfigInvalid(f"{kind} source: {first_error(exc)}") from exc


@app.command("import")
def import_(
    ctx: typer.Context,
    source: Annotated[
        str | None, typer.Option("--from", help=f"Store type: {', '.join(SOURCES)}")
    ] = None,
    store: Annotated[str | None, typer.Option("--store", help="A declared store")] = None,
    setting: Annotated[
        list[str] | None, typer.Option("--set", help="KEY=VALUE setting of the source")
    ] = None,
    prefix: Annotated[str, typer.Option("--prefix", help="Path or name prefix")] = "",
    tenant: Annotated[str | None, typer.Option("--tenant")] = None,
    kind: Annotated[str | None, typer.Option("--kind")] = None,
    owner: Annotated[str | None, typer.Option("--owner")] = None,
    id_template: Annotated[
        str | None, typer.Option("--id-template", help="Default {tenant}/{path}")
    ] = None,
    mapping: Annotated[Path | None, typer.Option("--map", help="A mapping TOML file")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show, change nothing")] = False,
    json: Json = False,
) -> None:
    """Bring secrets that already live in a store into the inventory, encrypted at once."""
    data = _map_file(mapping)
    head = data.get("source", {})
    kind_of = source or head.get("from")
    if kind_of not in SOURCES:
        raise UsageError(f"--from must be one of {', '.join(SOURCES)}")
    settings = {**head.get("settings", {}), **_settings(setting or [])}
    opened, linked = _source(ctx, kind_of, store or head.get("store"), settings)
    where = prefix or head.get("prefix", "")
    flags = {"tenant": tenant, "kind": kind, "owner": owner, "id_template": id_template}
    with opened:
        found = imports.run(
            open_app(ctx),
            opened.scan(where),
            where,
            _defaults(data, flags),
            source=kind_of,
            link=(linked, opened) if linked else None,
            dry_run=dry_run,
            actor=actor(),
        )
    _report(found, json, dry_run)


def _report(found: list[imports.Planned], json: bool, dry_run: bool) -> None:
    if json:
        output.emit_json([p.__dict__ for p in found])
        return
    output.table(
        "would import" if dry_run else "import",
        ["path", "credential", "action", "detail"],
        [[p.path, p.credential_id or "-", p.action, p.detail] for p in found],
    )
    counts: dict[str, int] = {}
    for p in found:
        counts[p.action] = counts.get(p.action, 0) + 1
    summary = ", ".join(f"{n} {a}" for a, n in sorted(counts.items())) or "nothing found"
    output.say(f"{len(found)} secret(s): {summary}" + (" (dry run)" if dry_run else ""))
