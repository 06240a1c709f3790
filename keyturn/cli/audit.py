"""`keyturn audit ...`: list, show, export and verify the log; make checkpoints."""

from __future__ import annotations

import json as json_text
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from keyturn.app import Keyturn
from keyturn.audit import chain, checkpoint
from keyturn.audit import log as audit
from keyturn.cli import output
from keyturn.cli.main import PLAIN, app, open_app
from keyturn.db.models import AuditEntry, AuditHead
from keyturn.domain.errors import NotFound, UsageError
from keyturn.domain.ids import validate_id, validate_name
from keyturn.domain.inputs import check_text, parse_moment
from keyturn.scheduler.checkpoints import write as write_checkpoint

audit_app = typer.Typer(
    help="The tamper-evident audit log.", no_args_is_help=True, rich_markup_mode=PLAIN
)
app.add_typer(audit_app, name="audit")

Json = Annotated[bool, typer.Option("--json", help="Machine-readable output")]
Credential = Annotated[str | None, typer.Option("--credential", help="Only this credential")]
Tenant = Annotated[str | None, typer.Option("--tenant", help="Only this tenant")]
Action = Annotated[str | None, typer.Option("--action", help="Only this action")]
Actor = Annotated[str | None, typer.Option("--actor", help="Only this actor")]
Since = Annotated[str | None, typer.Option("--since", help="From this time (ISO, inclusive)")]
Until = Annotated[str | None, typer.Option("--until", help="Before this time (ISO, exclusive)")]


def _filters(
    credential: str | None,
    tenant: str | None,
    action: str | None,
    actor: str | None,
    since: str | None,
    until: str | None,
) -> audit.Filters:
    if credential is not None:
        validate_id(credential)
    if tenant is not None:
        validate_name(tenant, "tenant")
    for flag, value in (("--action", action), ("--actor", actor)):
        if value is not None:
            check_text(value, flag)
    return audit.Filters(
        credential=credential,
        tenant=tenant,
        action=action,
        actor=actor,
        since=parse_moment(since, "--since") if since else None,
        until=parse_moment(until, "--until") if until else None,
    )


@audit_app.command("list")
def audit_list(
    ctx: typer.Context,
    credential: Credential = None,
    tenant: Tenant = None,
    action: Action = None,
    actor: Actor = None,
    since: Since = None,
    until: Until = None,
    after: Annotated[int, typer.Option(help="Entries after this number", min=0)] = 0,
    limit: Annotated[int, typer.Option(help="At most this many", min=1, max=100_000)] = 100,
    json: Json = False,
) -> None:
    """Entries oldest first, filtered; page on with --after (the last number shown)."""
    filters = _filters(credential, tenant, action, actor, since, until)
    instance = open_app(ctx)
    with instance.db.read() as session:
        query = audit.select_entries(filters, after=after).limit(limit)
        rows = [audit.as_dict(e) for e in session.execute(query).scalars()]
    if json:
        output.emit_json(rows)
        return
    output.table(
        None,
        ["#", "at (UTC)", "actor", "action", "credential", "outcome", "reason"],
        [
            [
                r["seq"],
                r["at"][:19].replace("T", " "),
                r["actor"],
                r["action"],
                r["credential"] or "",
                r["outcome"],
                r["reason"] or "",
            ]
            for r in rows
        ],
    )


def _link_state(instance: Keyturn, entry: AuditEntry) -> str:
    """Whether this one entry verifies (its MAC and its link to the entry before it)."""
    keys = instance.vault.keys
    with instance.db.read() as session:
        before = session.get(AuditEntry, entry.seq - 1) if entry.seq > 1 else None
    prev = before.hash if before is not None else chain.GENESIS
    if entry.hash != chain.expected_hash(keys, entry):
        return "altered: its MAC does not verify under the audit key"
    if entry.prev_hash != prev:
        return "does not link to the entry before it"
    return "verifies (its MAC and its link to the entry before it)"


@audit_app.command("show")
def audit_show(
    ctx: typer.Context,
    seq: Annotated[int, typer.Argument(metavar="NUMBER", help="The entry's number", min=1)],
    json: Json = False,
) -> None:
    """One entry in full, with whether it verifies."""
    instance = open_app(ctx)
    with instance.db.read() as session:
        entry = session.get(AuditEntry, seq)
        if entry is None:
            raise NotFound(f"no audit entry {seq}")
        data: dict[str, Any] = audit.as_dict(entry)
    data["verifies"] = _link_state(instance, entry)
    if json:
        output.emit_json(data)
        return
    for key, value in data.items():
        shown = json_text.dumps(value, sort_keys=True) if isinstance(value, dict) else value
        output.console.print(
            f"{key:12} {shown if shown is not None else '-'}", highlight=False, markup=False
        )


@audit_app.command("export")
def audit_export(
    ctx: typer.Context,
    out: Annotated[
        Path | None, typer.Option("--output", "-o", help="File (default: stdout)")
    ] = None,
    credential: Credential = None,
    tenant: Tenant = None,
    action: Action = None,
    actor: Actor = None,
    since: Since = None,
    until: Until = None,
) -> None:
    """Write the audit log (or the entries that match) as JSON lines."""
    filters = _filters(credential, tenant, action, actor, since, until)
    instance = open_app(ctx)
    with instance.db.read() as session:
        if out is None:
            audit.export(session, sys.stdout, filters=filters)
            return
        try:
            with output.private_file(out) as handle:
                count = audit.export(session, handle, filters=filters)
        except OSError as exc:
            raise UsageError(f"cannot write {out}: {exc.strerror}") from exc
    output.errors.print(f"wrote {count} entries to {out}", highlight=False)


@audit_app.command("verify")
def audit_verify(
    ctx: typer.Context,
    checkpoints: Annotated[
        list[Path] | None,
        typer.Option(
            "--checkpoint",
            help="A signed checkpoint (file, or a directory of them) to hold the log against "
            "(repeat)",
        ),
    ] = None,
    json: Json = False,
) -> None:
    """Check the chain, the head and the checkpoints; name the first thing done to the log."""
    marks = [cp for path in checkpoints or [] for cp in checkpoint.load(path)]
    instance = open_app(ctx)
    with instance.db.read() as session:
        result = audit.verify(session, marks)
    if json:
        output.emit_json(result.as_dict())
    elif result.ok:
        output.console.print(result.describe(), highlight=False)
        if not marks:
            output.errors.print(
                "note: without --checkpoint, a log cut short together with its head cannot be "
                "told from a shorter one",
                highlight=False,
            )
    if not result.ok:
        if not json:
            output.fail(result.describe())
        raise typer.Exit(1)


@audit_app.command("checkpoint")
def audit_checkpoint(
    ctx: typer.Context,
    out: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="A directory to add it to, or a file (default: stdout)"
        ),
    ] = None,
) -> None:
    """Make a signed checkpoint of the audit head now.

    Keep it where the database's writers cannot reach it; the worker makes them on its own
    with KEYTURN_AUDIT_CHECKPOINT_DIR or KEYTURN_AUDIT_CHECKPOINT_TO."""
    instance = open_app(ctx)
    with instance.db.read() as session:
        cp = checkpoint.make(session, instance.vault.keys)
    if out is None:
        sys.stdout.write(cp.to_json())
        return
    if out.is_dir():
        path = write_checkpoint(out, cp)
    else:
        try:
            out.write_text(cp.to_json())
        except OSError as exc:
            raise UsageError(f"cannot write {out}: {exc.strerror}") from exc
        path = out
    output.errors.print(f"checkpoint of entry {cp.seq} written to {path}", highlight=False)


@audit_app.command("restore-head")
def audit_restore_head(
    ctx: typer.Context,
    reason: Annotated[str, typer.Option("--reason", help="Why (goes into the audit log)")],
) -> None:
    """Put a deleted audit head back at the last entry.

    Only once the rest of the log verifies; the restore is recorded in the log, and
    checkpoints taken before still apply."""
    check_text(reason, "--reason")
    if not reason.strip():
        raise UsageError("a reason is required: it goes into the audit log")
    instance = open_app(ctx)
    with instance.db.write() as session:
        if session.get(AuditHead, 1) is not None:
            raise UsageError("the audit head is present; nothing to restore")
        result = audit.verify(session)
        if result.kind not in ("head-missing", "emptied"):
            raise UsageError(f"the log must otherwise verify first: {result.describe()}")
        last = session.get(AuditEntry, result.count) if result.count else None
        session.add(AuditHead(id=1, seq=result.count, hash=last.hash if last else chain.GENESIS))
        session.flush()
        audit.append(
            session,
            actor="cli",
            action="audit.head-restored",
            reason=reason.strip(),
            details={"at_entry": result.count},
        )
    output.console.print(f"audit head restored at entry {result.count}", highlight=False)
