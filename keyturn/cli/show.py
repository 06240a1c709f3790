"""`keyturn show ID`: one credential with its versions, consumers and the steps of its last
rotations (when, which step, the outcome, attempts, errors, who and why).

The steps come from the audit log (every step of the protocol is an entry), so `show` gives
the same story locally and in remote mode; locally the rotation rows add what the log does
not say (the step a rotation waits at, its next attempt).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Annotated, Any

import typer
from sqlalchemy import select

from keyturn.audit import log as audit
from keyturn.cli import output, remote
from keyturn.cli.commands import status_row
from keyturn.cli.main import app, open_app
from keyturn.cli.options import Json
from keyturn.db import repo
from keyturn.db.models import ApiToken, AuditEntry, Rotation, utcnow
from keyturn.domain.errors import Forbidden
from keyturn.domain.ids import validate_id
from keyturn.engine import publish

LAST_ROTATIONS = 5
ENDS = {
    "rotation.done": "done",
    "rotation.failed": "failed",
    "rotation.abort": "aborted",
    "rotation.retry": "retrying",
    "rotation.wait": "waiting",
}


@app.command()
def show(
    ctx: typer.Context,
    credential_id: Annotated[str, typer.Argument(metavar="ID")],
    json: Json = False,
) -> None:
    """One credential: versions (states, fingerprints), consumers, and every step of its last
    rotations with attempts, reasons, actors and errors."""
    validate_id(credential_id)
    api = remote.connect(ctx)
    data = _remote(api, credential_id) if api is not None else _local(ctx, credential_id)
    if json:
        output.emit_json(data)
    else:
        render(data)


def _local(ctx: typer.Context, credential_id: str) -> dict[str, Any]:
    instance = open_app(ctx)
    with instance.db.read() as session:
        cred = repo.get_credential(session, credential_id)
        data = status_row(session, cred, utcnow())
        data.update(
            purpose=cred.purpose,
            tags=cred.tags,
            stores=cred.stores,
            usernames=cred.usernames,
            verified_at=cred.verified_at,
        )
        data["versions"] = [_version(v.__dict__) for v in repo.versions(session, credential_id)]
        data["store_sync"] = publish.marks(session, credential_id)
        data["consumers"] = [
            {"name": c.name, "version": c.version, "last_seen_at": c.last_seen_at}
            for c in repo.consumers(session, credential_id)
        ]
        rows = repo.rotations(session, credential_id, limit=LAST_ROTATIONS)
        entries = _entries(session, credential_id, rows)
        names = {t.id: t.name for t in session.execute(select(ApiToken)).scalars()}
    data["rotations"] = history(entries, [_rotation_row(r) for r in rows], names)
    return data


def _entries(session: Any, credential_id: str, rows: list[Rotation] | Any) -> list[dict[str, Any]]:
    if not rows:
        return []
    since = min(r.started_at for r in rows) - timedelta(seconds=1)
    query = (
        select(AuditEntry)
        .where(
            AuditEntry.credential_id == credential_id,
            AuditEntry.action.like("rotation.%"),
            AuditEntry.at >= since,
        )
        .order_by(AuditEntry.seq)
    )
    return [audit.as_dict(e) for e in session.execute(query).scalars()]


def _rotation_row(rot: Rotation) -> dict[str, Any]:
    return {
        "id": rot.id,
        "trigger": rot.trigger,
        "actor": rot.actor,
        "reason": rot.reason,
        "status": rot.status,
        "step": rot.step,
        "attempts": rot.attempts,
        "error": rot.error,
        "new_version": rot.new_version,
        "started_at": rot.started_at,
        "finished_at": rot.finished_at,
        "next_attempt_at": rot.next_attempt_at,
    }


def _version(v: dict[str, Any]) -> dict[str, Any]:
    keys = ("number", "state", "username", "key_id", "fingerprint", "created_at", "activated_at")
    return {k: v.get(k) for k in (*keys, "retired_at")}


def _remote(api: remote.Remote, credential_id: str) -> dict[str, Any]:
    data = api.credential(credential_id)
    data["versions"] = [_version(v) for v in api.versions(credential_id)]
    data["consumers"] = api.consumers(credential_id)
    # The log from a little before the oldest version shown: the last rotations' entries.
    created = sorted(v["created_at"] for v in data["versions"])[-LAST_ROTATIONS - 1 :]
    since = datetime.fromisoformat(created[0]) - timedelta(days=1) if created else None
    try:
        entries = [
            x for x in api.audit(credential_id, since) if x["action"].startswith("rotation.")
        ]
    except Forbidden:
        entries = []
        data["rotations_note"] = "rotation steps need an admin or auditor token (audit log)"
    try:  # token names for the actors: an admin token may list them
        names = {t["id"]: t["name"] for t in api.tokens()}
    except Forbidden:
        names = {}
    data["rotations"] = history(entries, [], names)[:LAST_ROTATIONS]
    return data


def history(
    entries: list[dict[str, Any]], rows: list[dict[str, Any]], names: dict[str, str]
) -> list[dict[str, Any]]:
    """Rotations, newest first, each with its steps from the audit *entries*. *rows*
    (local rotation rows) say more than the log; without them the status is inferred."""
    steps: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for entry in entries:
        rotation = entry["details"].get("rotation")
        if isinstance(rotation, int):
            steps[rotation].append(entry)
    known = {r["id"]: dict(r) for r in rows}
    for rotation_id, found in steps.items():
        if rotation_id not in known and not rows:
            known[rotation_id] = _inferred(rotation_id, found)
    out = []
    for rotation_id in sorted(known, reverse=True):
        rot = known[rotation_id]
        rot["actor"] = _actor(str(rot["actor"]), names)
        rot["steps"] = [_step(e, names) for e in steps.get(rotation_id, [])]
        out.append(rot)
    return out


def _inferred(rotation_id: int, entries: list[dict[str, Any]]) -> dict[str, Any]:
    first, last = entries[0], entries[-1]
    status = ENDS.get(last["action"], "running")
    failures = [e for e in entries if e["action"] in ("rotation.retry", "rotation.failed")]
    return {
        "id": rotation_id,
        "trigger": first["details"].get("trigger"),
        "actor": first["actor"],
        "reason": first["reason"] or "",
        "status": status,
        "step": last["action"].removeprefix("rotation."),
        "attempts": len(failures),
        "error": failures[-1]["details"].get("error") if failures else None,
        "new_version": None,
        "started_at": first["at"],
        "finished_at": last["at"] if status in ("done", "failed", "aborted") else None,
        "next_attempt_at": last["details"].get("next_attempt_at"),
    }


def _actor(name: str, names: dict[str, str]) -> str:
    token = name.removeprefix("token:")
    return f"{name} ({names[token]})" if token != name and names.get(token) else name


DETAIL_KEYS = ("username", "stores", "error", "lagging", "next_attempt_at")
# Steps whose version number says something (the new one made, the old one retired).
VERSION_STEPS = ("rotation.create", "rotation.revoke", "rotation.done")


def _step(entry: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    details = entry["details"]
    parts = [f"{k} {details[k]}" for k in DETAIL_KEYS if details.get(k) not in (None, [], "")]
    if entry["action"] in VERSION_STEPS and details.get("version"):
        parts.append(f"version {details['version']}")
    if details.get("attempt"):
        parts.insert(0, f"attempt {details['attempt']}")
    if details.get("old_rejected") is False:
        parts.append("the old value is still accepted")
    return {
        "at": entry["at"],
        "step": entry["action"].removeprefix("rotation."),
        "outcome": entry["outcome"],
        "actor": _actor(entry["actor"], names),
        "detail": "; ".join(parts),
    }


def render(data: dict[str, Any]) -> None:
    output.say(
        f"{data['id']}  tenant {data['tenant']}  kind {data['kind']}  "
        f"owner {data['owner'] or '-'}  strategy {data['strategy']}  "
        f"target {data['target'] or '-'}  due {data['due']}  sync {data['sync'] or '-'}"
    )
    if data.get("dispute"):
        output.say(f"held back: {data['dispute']}")
    output.table(
        "versions",
        ["#", "state", "user", "fingerprint", "created", "activated"],
        [
            [
                v["number"],
                v["state"],
                v["username"] or "",
                v["fingerprint"],
                output.when(v["created_at"]),
                output.when(v["activated_at"]),
            ]
            for v in data["versions"]
        ],
    )
    if data.get("store_sync"):
        output.table(
            "stores",
            ["store", "version", "status", "detail"],
            [
                [m["store"], m["version"], m["status"], m["detail"] or ""]
                for m in data["store_sync"]
            ],
        )
    if data["consumers"]:
        output.table(
            "consumers",
            ["name", "version", "last seen"],
            [[c["name"], c["version"], output.when(c["last_seen_at"])] for c in data["consumers"]],
        )
    for rot in data["rotations"]:
        _render_rotation(rot)
    if data.get("rotations_note"):
        output.say(str(data["rotations_note"]))


def _render_rotation(rot: dict[str, Any]) -> None:
    reason = f' "{rot["reason"]}"' if rot["reason"] else ""
    tries = f", {rot['attempts']} failed attempt(s)" if rot["attempts"] else ""
    title = (
        f"rotation {rot['id']}: {rot['trigger']} by {rot['actor']}{reason}: "
        f"{rot['status']}{'' if rot['step'] == 'done' else ' at ' + str(rot['step'])}{tries}"
    )
    if rot["error"] and rot["status"] != "done":
        title += f"; last error: {rot['error']}"
    output.table(
        title,
        ["when", "step", "outcome", "detail"],
        [[output.when(s["at"]), s["step"], s["outcome"], s["detail"]] for s in rot["steps"]],
    )
