"""Crafted history for report tests: credentials, versions, rotations, consumers and audit
entries written straight into keyturn's database at chosen moments, so that each rule can
be checked at its boundary with `--at`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from keyturn.app import Keyturn
from keyturn.audit import log as audit
from keyturn.db.models import Consumer, Credential, Rotation, StoreRow, TargetRow, Version
from keyturn.db.models import Policy as PolicyRow
from keyturn.domain.model import Secret

T0 = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)
SECRET = "crafted-Secret-value-9f3b2"  # grep target: must appear in no report output


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


class Craft:
    def __init__(self, app: Keyturn) -> None:
        self.app = app

    def policy(self, name: str, **settings: object) -> None:
        with self.app.db.write() as session:
            session.add(PolicyRow(name=name, settings=settings))

    def _plumbing(self, session: object) -> None:
        from sqlalchemy.orm import Session

        assert isinstance(session, Session)
        if session.get(TargetRow, "files") is None:
            session.add(TargetRow(name="files", type="passwd-file", settings={}))
            session.add(StoreRow(name="env", type="dotenv", settings={}))
            session.add(StoreRow(name="env2", type="dotenv", settings={}))
            session.flush()

    def credential(
        self,
        cid: str,
        *,
        tenant: str = "acme",
        kind: str = "smtp",
        owner: str = "ops@acme.test",
        target: bool = True,
        stores: tuple[str, ...] = (),
        policy: str | None = None,
        created: datetime = T0,
    ) -> None:
        """A credential with version 1 current since *created*."""
        with self.app.db.write() as session:
            self._plumbing(session)
            self.app.vault.tenant_key(session, tenant)
            session.add(
                Credential(
                    id=cid,
                    tenant_id=tenant,
                    kind=kind,
                    owner=owner,
                    purpose="crafted",
                    policy=policy,
                    target="files" if target else None,
                    stores=list(stores),
                    created_at=created,
                )
            )
            session.flush()
            self._version(session, cid, tenant, 1, created)
            audit.append(
                session,
                actor="test",
                action="version.import",
                credential_id=cid,
                tenant_id=tenant,
                details={"version": 1},
                at=created,
            )

    def _version(self, session: object, cid: str, tenant: str, number: int, at: datetime) -> None:
        from sqlalchemy.orm import Session

        assert isinstance(session, Session)
        sealed, key_id = self.app.vault.seal(session, tenant, cid, number, Secret(SECRET))
        session.add(
            Version(
                credential_id=cid,
                number=number,
                state="current",
                ciphertext=sealed,
                data_key_id=key_id,
                fingerprint="f" * 16,
                created_at=at,
                activated_at=at,
            )
        )
        session.flush()

    def rotate(
        self,
        cid: str,
        at: datetime,
        *,
        trigger: str = "schedule",
        status: str = "done",
        revoked: datetime | None = None,
        wait_until: datetime | None = None,
    ) -> None:
        """A rotation started at *at*. Done: a new current version, the old one previous
        until *revoked* (or still accepted when None). Failed/retrying: no new version."""
        with self.app.db.write() as session:
            cred = session.get(Credential, cid)
            assert cred is not None
            numbers = session.execute(
                select(Version.number).where(Version.credential_id == cid)
            ).scalars()
            new = max(numbers) + 1
            rotation = Rotation(
                credential_id=cid,
                trigger=trigger,
                actor="test",
                strategy="single",
                step="done" if status == "done" else "set",
                status=status,
                started_at=at,
                updated_at=at,
                finished_at=at if status in ("done", "failed", "aborted") else None,
                new_version=new if status == "done" else None,
                wait_until=wait_until,
            )
            session.add(rotation)
            if status != "done":
                return
            for old, state in (("previous", "retired"), ("current", "previous")):
                session.execute(
                    update(Version)
                    .where(Version.credential_id == cid, Version.state == old)
                    .values(state=state, retired_at=at if state == "retired" else None)
                )
            self._version(session, cid, cred.tenant_id, new, at)
            self._audit(session, cid, "rotation.promote", at, version=new)
            if revoked is not None:
                session.execute(
                    update(Version)
                    .where(Version.credential_id == cid, Version.state == "previous")
                    .values(state="retired", retired_at=revoked)
                )

    def _audit(
        self, session: object, cid: str, action: str, at: datetime, **details: object
    ) -> None:
        from sqlalchemy.orm import Session

        assert isinstance(session, Session)
        cred = session.get(Credential, cid)
        assert cred is not None
        outcome = str(details.pop("outcome", "ok"))
        audit.append(
            session,
            actor="test",
            action=action,
            outcome=outcome,
            credential_id=cid,
            tenant_id=cred.tenant_id,
            details=details,
            at=at,
        )

    def read(self, cid: str, at: datetime) -> None:
        with self.app.db.write() as session:
            self._audit(session, cid, "secret.read", at, version=1)

    def verify(self, cid: str, at: datetime, *, ok: bool = True, status: str = "") -> None:
        """A `keyturn verify` entry as keyturn.engine.service writes it."""
        status = status or ("in-sync" if ok else "out-of-sync")
        ok = status == "in-sync"
        with self.app.db.write() as session:
            self._audit(
                session,
                cid,
                "credential.verify",
                at,
                status=status,
                outcome="ok" if ok else "error",
            )

    def publish(self, cid: str, at: datetime, version: int, stores: list[str]) -> None:
        with self.app.db.write() as session:
            self._audit(session, cid, "rotation.publish", at, version=version, stores=stores)

    def repair(self, cid: str, at: datetime, version: int, store: str) -> None:
        """`keyturn verify --repair`: the store gets the current version again."""
        with self.app.db.write() as session:
            self._audit(session, cid, "store.repair", at, version=version, store=store)

    def consumer(
        self, cid: str, name: str, created: datetime, last_seen: datetime | None = None
    ) -> None:
        with self.app.db.write() as session:
            session.add(
                Consumer(
                    credential_id=cid,
                    name=name,
                    version=1,
                    created_at=created,
                    last_seen_at=last_seen,
                )
            )
