"""A rotation's persisted record, as the protocol sees it: loading it, moving its step
pointer (fenced by the lease) with an audit entry, the values in play, and the credential's
target and strategy, opened once per run.

Steps that touch nothing outside keyturn share one transaction, the *chain*: `_write()` and
`_read()` give the chain's session while one is open, and the protocol commits it before any
step that talks to a target or a store. So the pending value is still committed before any
target hears of it, and each outside effect is still recorded by a step of its own, but a
rotation commits a handful of times instead of once per step. Losing an uncommitted chain
(a crash, keyturn's database failing) only means replaying local steps, which is harmless.

An outside step that follows a committed chain (test; publish without stores) records its
pointer move and audit entry without a transaction: they wait in memory for the next chain,
which commits them first, in order (a crash before it replays those steps, harmless as every
step is). `set` does not wait: its move is how readers learn that `next` is on the target.
The rows a committed chain loaded (the rotation, its credential and policy) are kept for the
next one: nobody else writes them while the lease is ours. On PostgreSQL (issue 23) a
fresh rotation is four commits: recorded; the pending value stored; `set` done; everything
after the verification logins.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, Update, bindparam, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from keyturn.app import Keyturn
from keyturn.audit import log as audit
from keyturn.audit.chain import keys_of
from keyturn.db import direct, repo, rotation
from keyturn.db.models import Credential, Rotation, TargetRow, Tenant, Version, utcnow
from keyturn.db.models import Policy as PolicyRow
from keyturn.db.reads import Entry
from keyturn.domain.errors import KeyturnError, PluginError, RotationInProgress, TargetRejected
from keyturn.domain.model import (
    ACTIVE_STATUSES,
    RotationStatus,
    Secret,
    Step,
    Trigger,
    VersionState,
)
from keyturn.domain.policy import Policy as EffectivePolicy
from keyturn.engine import lease, strategies
from keyturn.engine.strategies import RotationStrategy
from keyturn.notify import outbox
from keyturn.runtime import open_target
from keyturn.targets.base import Account, Target

# Where a step's record goes (`Record._recording`): a session (None: the next chain's), and
# the rotation and credential rows.
_Where = tuple["Session | None", Rotation, Credential]


@dataclass(frozen=True)
class Outcome:
    rotation_id: int
    credential_id: str
    status: str
    step: str
    new_version: int | None
    error: str | None
    next_attempt_at: datetime | None
    wait_until: datetime | None
    # Whether the value keyturn hands out as current still logs in (current_value below).
    current_value: str = "works"


def current_value(rot: Rotation, has_current: bool) -> str:
    """ "works"; "refused" once a `single` rotation has put the new value on the target (past
    `set`); "maybe-refused" where a `single` set failed and may have reached it; "none"
    without a current value (a first rotation)."""
    if not has_current:
        return "none"
    promoted = rot.step in (Step.WAIT, Step.REVOKE, Step.DONE)  # the new value is current
    if promoted or rot.status == RotationStatus.ABORTED:  # or the old one was put back
        return "works"
    if rot.strategy != "single" or rot.step == Step.CREATE:
        return "works"
    if rot.step == Step.SET:
        return "works" if rot.status == RotationStatus.RUNNING else "maybe-refused"
    return "refused"


def account(version: Version | Value) -> Account:
    if isinstance(version, Value):
        return version.account
    return Account(version.username or "", version.key_id)


@dataclass(frozen=True)
class Value:
    """A version in play during one run, decrypted once: what set, test and revoke need."""

    number: int
    fingerprint: str
    username: str | None
    account: Account
    secret: Secret
    validity: tuple[datetime | None, datetime | None] = (None, None)

    @classmethod
    def of(cls, app: Keyturn, version: Version) -> Value:
        return cls(
            version.number,
            version.fingerprint,
            version.username,
            Account(version.username or "", version.key_id),
            app.vault.reveal(version),
            (version.valid_from, version.expires_at),
        )


def move(
    session: Session, credential_id: str, old: VersionState, new: VersionState, **extra: Any
) -> None:
    # On the table, not the mapped class: a Core statement, without the ORM's bulk-update
    # machinery (loaded versions are not synchronised either way: callers expire them).
    where = {"credential_id": credential_id, "state": old}
    _set(session, cast(Table, Version.__table__), where, {"state": new, **extra})


_UPDATES: dict[tuple[str, tuple[str, ...], tuple[str, ...]], Update] = {}


def _set(session: Session, table: Table, where: dict[str, Any], values: dict[str, Any]) -> int:
    """UPDATE *table* SET *values* WHERE the columns of *where* are equal, in the session's
    transaction and straight on its connection (keyturn.db.direct.execute); how many rows.
    The statement is built once per shape (construction and cache key cost more CPU than
    the round trip), bound as ``w_NAME`` and ``v_NAME``."""
    key = (table.name, tuple(where), tuple(sorted(values)))
    statement = _UPDATES.get(key)
    if statement is None:
        c = table.c
        statement = (
            update(table)
            .where(*(c[n] == bindparam(f"w_{n}", type_=c[n].type) for n in key[1]))
            .values({n: bindparam(f"v_{n}", type_=c[n].type) for n in key[2]})
        )
        _UPDATES[key] = statement
    given = {f"w_{name}": value for name, value in where.items()}
    given.update((f"v_{name}", value) for name, value in values.items())
    return direct.execute(session.connection(), statement, given).rowcount


class Record:
    """One rotation's row and the plugin it drives; the steps build on it."""

    credential_id: str  # known once `run` has read the row

    def __init__(
        self,
        app: Keyturn,
        rotation_id: int,
        *,
        force: bool = False,
        owner: str | None = None,
        fresh: bool = False,
    ) -> None:
        """*owner* names the lease holder (default: the process's worker id); *fresh*: the
        rotation was just started, so it is its turn (no read first to find out)."""
        self.app = app
        self.fresh = fresh
        self.db = app.db
        self.id = rotation_id
        self.owner = owner or app.worker_id
        self.force = force
        self._target: Target | None = None
        self._strategy: RotationStrategy | None = None
        # The open chain (see the module's docstring), and the pointer as last committed.
        self._chain: Session | None = None
        self._chain_stack: ExitStack | None = None
        self._held: tuple[Rotation, Credential] | None = None
        # The rows a committed chain loaded (the rotation, its credential, its policy), kept
        # for the next chain: nobody else writes them while our lease holds (detached, no
        # query to put them back). Dropped with a rolled-back chain.
        self._kept: list[Any] = []
        self._chaining = False  # `run` chains local steps; a step called alone commits
        self._pointer: dict[str, Any] = {}  # the chain's pointer move, written at its commit
        self._entries: list[dict[str, Any]] = []  # the chain's audit entries, likewise
        self._effective: EffectivePolicy | None = None  # the policy, read once per run
        self.step = Step.CREATE
        self.status = RotationStatus.RUNNING
        self._committed = (self.step, self.status)
        self._stores: tuple[str, ...] = ()  # the credential's stores, read when a run starts
        # `single`: this run's test step saw the old value refused, all its revoke checks.
        self._refused_at_test = False
        self._who: tuple[str, Trigger, str] | None = None
        # (pending, current) as this run last read or made them; dropped with a rolled-back
        # chain and after a failure, so a resumed run reads them again.
        self._play: tuple[Value, Value | None] | None = None
        # The previous version as this run's finish left it ((None,) when there is none),
        # for wait and revoke; None: not known, read it.
        self._previous: tuple[Value | None] | None = None
        # (pending, current) as the transaction that recorded this rotation read them, for
        # its create step (the same transaction or the next chain, under our lease).
        self._seeded: tuple[Version | None, Version | None] | None = None
        # Held: the identity map holds rows weakly, and `_keepable` looks for them there.
        self._policy_row: PolicyRow | None = None
        self._tenant_row: Tenant | None = None
        self._seeded_rows: tuple[object, ...] = ()
        self._seeded_last: int | None = None  # the last version number, read with _seeded
        # A previous version found before this rotation's promotion (`_revoke_leftover`).
        self._leftover: Version | None = None

    # -- the chain -------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """A write session: the open chain's (opening one if needed; it commits later), or,
        outside `run` (a step called by itself), a transaction that commits at the block's end."""
        if not self._chaining:
            with self.db.write() as session:
                yield session
            self._committed = (self.step, self.status)
            return
        if self._chain is None:
            stack = ExitStack()
            self._chain = stack.enter_context(self.db.write())
            self._chain_stack = stack
        yield self._chain

    @contextmanager
    def _read(self) -> Iterator[Session]:
        """The chain's session while one is open (it sees the chain's writes), else a read."""
        if self._chain is not None:
            yield self._chain
            return
        with self.db.read() as session:
            yield session

    def _commit(self) -> None:
        """Commit the open chain, if any (its pointer move first, fenced by the lease).

        Without one, pointer moves and audit entries recorded without a session (an outside
        step whose replay is harmless: `_step_done`) wait for the next chain."""
        if self._chain is None:
            if not (self._pointer or self._entries):
                self._committed = (self.step, self.status)
            return
        with rotation.turn(self.db.engine):  # the audit entries go in last: lock to commit
            try:
                self._flush_pointer(self._chain)
                kept = self._keepable(self._chain)
            except BaseException:
                self._rollback()
                raise
            stack, self._chain, self._chain_stack = self._chain_stack, None, None
            self._held = None
            if stack is not None:
                try:
                    stack.close()
                except BaseException:
                    self.step, self.status, self._play = *self._committed, None
                    self._kept, self._previous = [], None
                    raise
        self._kept = kept
        self._committed = (self.step, self.status)

    def _keepable(self, session: Session) -> list[Any]:
        """What the next chain may reuse of this one's rows (see `_kept`)."""
        if self._held is None:
            return []
        rot, cred = self._held
        policy = (
            session.identity_map.get(session.identity_key(PolicyRow, cred.policy))
            if cred.policy
            else None
        )
        # The tenant (its recipients, for the promotion's notice): loaded by the create
        # step's sealing, which no later chain of the run repeats.
        tenant = session.identity_map.get(session.identity_key(Tenant, cred.tenant_id))
        return [rot, cred] + [row for row in (policy, tenant) if row is not None]

    def _rollback(self, *, keep_unsessioned: bool = False) -> None:
        """Drop the open chain: the pointer is back where it was last committed.

        *keep_unsessioned*: with no chain open, keep what `_step_done` recorded without a
        session (outside effects that did happen; nothing of theirs was half-written)."""
        if keep_unsessioned and self._chain is None:
            return
        stack, self._chain, self._chain_stack, self._held = self._chain_stack, None, None, None
        self._pointer, self._entries = {}, []
        self._kept, self._previous, self._seeded, self._seeded_last = [], None, None, None
        self._seeded_rows = ()
        if stack is not None:
            # A rollback that fails (the connection is gone) leaves nothing committed either.
            with suppress(Exception):
                stack.__exit__(_Rollback, _Rollback(), None)
        self.step, self.status, self._play = *self._committed, None

    def _not_claimed(self) -> None:
        """The lease is someone else's: say whose, unless the rotation is over anyway."""
        with self.db.read() as session:
            rot = session.get(Rotation, self.id)
            if rot is None:
                raise RotationInProgress(f"no rotation {self.id}")
            self.credential_id = rot.credential_id
            if rot.status in ACTIVE_STATUSES:
                raise RotationInProgress(
                    f"rotation {self.id} of {rot.credential_id} is being run by "
                    f"{rot.lease_owner} (lease until {rot.lease_expires_at:%H:%M:%SZ})"
                )

    def _due(self, rot: Rotation) -> bool:
        if self.force or rot.status == RotationStatus.RUNNING:
            return True
        if rot.status == RotationStatus.WAITING:
            return True  # the wait step decides
        return rot.next_attempt_at is None or rot.next_attempt_at <= utcnow()

    # -- plumbing --------------------------------------------------------------------------

    @property
    def target(self) -> Target:
        if self._target is None:
            with self._read() as session:
                cred = repo.get_credential(session, self.credential_id)
                row = session.get(TargetRow, cred.target or "")
                if row is None:
                    raise PluginError(f"{cred.id} has no target; declare one in the inventory")
            self._target = open_target(self.app, row)
            self._strategy = strategies.for_target(self._target, cred.strategy)
        return self._target

    def _open_target(self) -> None:
        """Open the target now if it can be; if not, the step that needs it says why."""
        try:
            self.target  # noqa: B018
        except KeyturnError:
            self._target = self._strategy = None

    @property
    def strategy(self) -> RotationStrategy:
        if self._strategy is None:
            self.target  # noqa: B018 (opening the target picks its strategy)
        assert self._strategy is not None
        return self._strategy

    def _load(self, session: Session) -> tuple[Rotation, Credential]:
        """The rotation and its credential (from the session's identity map when it has them,
        or as the last chain left them)."""
        if session is self._chain:
            if self._held is not None:
                return self._held
            self._reattach(session)
        rot = session.get(Rotation, self.id)
        assert rot is not None
        cred = session.get(Credential, rot.credential_id)
        cred = cred or repo.get_credential(session, rot.credential_id)
        if session is self._chain:  # the identity map holds objects weakly: keep these loaded
            self._held = (rot, cred)
        return rot, cred

    def defer(self, _session: Session, **entry: Any) -> None:
        """An audit entry for the chain's commit (as `keyturn.audit.log.append` takes it)."""
        self._entries.append({"at": utcnow(), **entry})

    def seed(
        self,
        rot: Rotation,
        cred: Credential,
        versions: dict[VersionState, Version],
        rows: tuple[object, ...] = (),
        last: int | None = None,
    ) -> None:
        """The rows `run`'s *begin* read and made in the chain's session: no reading back.
        *rows*: others it read (policy, tenant, target), held for this run's `session.get`;
        *last*: the last version number then (no version is made but by a rotation once
        the credential has one, and this one holds the lease)."""
        self._held = (rot, cred)
        self._seeded_rows = rows
        self._seeded_last = last
        self._seeded = (versions.get(VersionState.PENDING), versions.get(VersionState.CURRENT))
        self._leftover = versions.get(VersionState.PREVIOUS)

    def _reattach(self, session: Session) -> None:
        """Put the rows the last chain kept into *session* (no query; none it loaded itself)."""
        for row in self._kept:
            if session.identity_map.get(session.identity_key(instance=row)) is None:
                session.add(row)

    def _advance(self, session: Session | None, step: Step, **values: Any) -> None:
        """Move the pointer, fenced by our lease; everything else in *session* commits with it.

        In a chain the UPDATE waits for the chain's commit (`_commit`): one fenced statement
        for all the steps the chain holds, checked before anything of theirs commits."""
        values.setdefault("status", RotationStatus.RUNNING)
        values.update(step=step, updated_at=utcnow())
        if session is None or session is self._chain:  # None: a chain's, with no session yet
            self._pointer.update(values)
        else:
            self._move_pointer(session, values)
        # The UPDATE bypasses the identity map: a loaded rotation gets the values it writes.
        if session is None:
            loaded = self._kept[0] if self._kept else None
        else:
            loaded = session.identity_map.get(session.identity_key(Rotation, self.id))
        if loaded is not None:
            for name, value in values.items():
                set_committed_value(loaded, name, value)
        self.step, self.status = step, RotationStatus(values["status"])

    def _move_pointer(self, session: Session, values: dict[str, Any]) -> None:
        where = {"id": self.id, "lease_owner": self.owner}
        if not _set(session, cast(Table, Rotation.__table__), where, values):
            raise lease.LeaseLost()

    def _flush_pointer(self, session: Session) -> None:
        """Write the chain's pending pointer move now (fenced: LeaseLost if not ours), then
        its audit entries, in order."""
        pointer, self._pointer = self._pointer, {}
        if pointer:
            self._move_pointer(session, pointer)
        entries, self._entries = self._entries, []
        if entries:
            _append(session, entries)

    def _release(self) -> None:
        """Give the lease back with the chain's last pointer move (one statement)."""
        with self._write() as session:
            if session is self._chain and self._pointer:
                self._pointer.update(lease_owner=None, lease_expires_at=None)
            else:
                lease.release_in(session, self.id, self.owner)

    def _audit(
        self,
        session: Session | None,
        action: str,
        cred: Credential,
        rot: Rotation,
        outcome: str = "ok",
        fingerprint: str | None = None,
        **details: Any,
    ) -> None:
        if self._who is None:  # who asked for the rotation, and why: fixed at its start
            self._who = (rot.actor, Trigger(rot.trigger), rot.reason)
        actor, trigger, reason = self._who
        entry: dict[str, Any] = {
            "actor": actor if trigger != Trigger.SCHEDULE else "scheduler",
            "action": action,
            "outcome": outcome,
            "credential_id": cred.id,
            "tenant_id": cred.tenant_id,
            "fingerprint": fingerprint,
            "reason": reason or None,
            "details": {"rotation": self.id, "trigger": trigger, "worker": self.owner, **details},
            "at": utcnow(),
        }
        if session is None or session is self._chain:
            # Appended when the chain commits: the audit head (which serialises every
            # writer of the log) is then locked for the commit only, not for the chain.
            self._entries.append(entry)
        else:
            audit.append(session, **entry)

    def _step_done(
        self,
        step: Step,
        action: str,
        version: Version | Value,
        outcome: str = "ok",
        hold: bool = True,
        **details: Any,
    ) -> None:
        """Move the pointer to *step* with the audit entry of the step just done.

        In a run whose last chain committed, without a session: both wait in memory for the
        next chain (a crash before it replays this step, which is harmless: every step is),
        so a step that talks to a target does not cost a transaction of its own. *hold*
        False: a chain of its own, committed before the next outside step (a move others
        must see as it happens)."""
        with self._recording(hold) as (session, rot, cred):
            self._record_done(session, rot, cred, step, action, version, outcome, details)

    @contextmanager
    def _recording(self, hold: bool = True) -> Iterator[_Where]:
        """Where a step's record goes: nowhere yet (None: it waits in memory for the next
        chain, see `_step_done`) when the run's last chain committed and kept its rows and
        *hold*; else the chain's (or a write) session, with the rows loaded in it."""
        if hold and self._chaining and self._chain is None and self._kept:
            yield None, self._kept[0], self._kept[1]
            return
        with self._write() as session:
            rot, cred = self._load(session)
            yield session, rot, cred

    def _record_done(
        self,
        session: Session | None,
        rot: Rotation,
        cred: Credential,
        step: Step,
        action: str,
        version: Version | Value,
        outcome: str,
        details: dict[str, Any],
    ) -> None:
        self._advance(session, step)
        self._audit(
            session,
            action,
            cred,
            rot,
            outcome=outcome,
            fingerprint=version.fingerprint,
            version=version.number,
            **details,
        )

    def _revoke_leftover(self) -> None:
        """Before this rotation changes the target: revoke a previous version that a
        rotation failed or aborted after its promotion left accepted (`dual` keeps it
        beside the current value; an issuing target, its key). This rotation's promotion
        retires it, and a retired value must be refused (nor may an issuing target run out
        of room for a third key). Idempotent, as revoke is; a replay finds it refused."""
        row, self._leftover = self._leftover, None
        if row is None:
            return
        old = Value.of(self.app, row)
        self.strategy.revoke(old.account, old.secret)
        if self.target.test(old.account, old.secret):
            raise TargetRejected(
                f"{self.credential_id}: version {old.number}, left accepted by an earlier "
                "rotation, is still accepted after revoke"
            )
        with self._recording() as (session, rot, cred):
            self._audit(
                session,
                "rotation.revoke-leftover",
                cred,
                rot,
                fingerprint=old.fingerprint,
                version=old.number,
                old_rejected=True,
            )

    def _policy(self, session: Session, cred: Credential) -> EffectivePolicy:
        if self._effective is None:
            if cred.policy:  # held, so that the next chain finds it (`_keepable`)
                self._policy_row = session.get(PolicyRow, cred.policy)
            # Likewise the tenant, which sealing the new value (create) loads anyway.
            self._tenant_row = session.get(Tenant, cred.tenant_id)
            self._effective = repo.policy_for(session, cred, type(self.target).password_rules)
        return self._effective

    def _recipients(self, policy: EffectivePolicy) -> list[str]:
        """Who hears of this credential (`keyturn.notify.outbox.recipients_for`, from the
        policy and the tenant `_policy` read)."""
        return outbox.recipients_of(policy.recipients, self._tenant_row)

    def _previous_of(self, session: Session) -> Value | None:
        """The previous version, decrypted: as this run's finish left it, else as stored."""
        if self._previous is None:
            row = repo.version_in_state(session, self.credential_id, VersionState.PREVIOUS)
            self._previous = (Value.of(self.app, row) if row else None,)
        return self._previous[0]

    @staticmethod
    def _promoted(
        session: Session, cred: Credential, policy: EffectivePolicy, pending: Value, now: datetime
    ) -> None:
        """The credential as the promotion leaves it: in sync, due again from *now* (what
        repo.refresh_due computes, from the version just made current). One UPDATE (`_set`);
        the loaded row takes the values as committed, so the session has nothing to flush."""
        due_at, notice_at = (
            policy.due_times(now, cred.id, pending.validity) if cred.target else (None, None)
        )
        values = {
            "sync_status": "in-sync",
            "verified_at": now,
            "schedule": policy.schedule,
            "due_at": due_at,
            "notice_at": notice_at,
            "updated_at": now,
        }
        _set(session, cast(Table, Credential.__table__), {"id": cred.id}, values)
        for name, value in values.items():
            set_committed_value(cred, name, value)

    def _in_play(self) -> tuple[Value, Value | None]:
        """The pending value and the current one, decrypted (read once per run)."""
        if self._play is None:
            with self._read() as session:
                pending, current = self._values(session)
                assert pending is not None, f"{self.step} without a pending version"
                self._play = (
                    Value.of(self.app, pending),
                    Value.of(self.app, current) if current else None,
                )
        return self._play

    def _last_number(self) -> int | None:
        """The last version number as the transaction that recorded this rotation read it
        (once; None: `Vault.new_version` reads it)."""
        last, self._seeded_last = self._seeded_last, None
        return last

    def _values(self, session: Session) -> tuple[Version | None, Version | None]:
        """The pending and the current version (one query, or none when just recorded)."""
        if self._seeded is not None:
            seeded, self._seeded = self._seeded, None
            return seeded
        self._seeded_last = None  # read with what is read now, if needed
        found = repo.versions_in_states(
            session,
            self.credential_id,
            (VersionState.PENDING, VersionState.CURRENT, VersionState.PREVIOUS),
        )
        if self.step in (Step.CREATE, Step.SET):  # before this rotation's own previous
            self._leftover = found.get(VersionState.PREVIOUS)
        return found.get(VersionState.PENDING), found.get(VersionState.CURRENT)

    def outcome(self) -> Outcome:
        with self.db.read() as session:
            return self._outcome(session)

    def _outcome(self, session: Session) -> Outcome:
        rot = session.get(Rotation, self.id)
        assert rot is not None
        return Outcome(
            rot.id,
            rot.credential_id,
            rot.status,
            rot.step,
            rot.new_version,
            rot.error,
            rot.next_attempt_at,
            rot.wait_until,
            current_value(rot, rot.old_version is not None or _has_current(session, rot)),
        )


def _has_current(session: Session, rot: Rotation) -> bool:
    """Before `create` has recorded the versions in play: is there a current one?"""
    if rot.new_version is not None:
        return False  # create ran and found none (old_version is None)
    return repo.version_in_state(session, rot.credential_id, VersionState.CURRENT) is not None


# What `keyturn.audit.log.append` assumes of an entry that does not say.
_UNSAID: dict[str, Any] = dict.fromkeys(
    ("credential_id", "tenant_id", "fingerprint", "reason", "details")
) | {"outcome": "ok"}


def _append(session: Session, entries: list[dict[str, Any]]) -> None:
    """A chain's audit entries, chained and inserted on Core (keyturn.db.rotation: one
    statement on PostgreSQL), after whatever the session holds (flushed first)."""
    session.flush()
    audit.forget_head(session)
    rows = []
    for entry in entries:
        given = {k: v for k, v in entry.items() if k != "at"}
        rows.append(Entry(**audit.fields(**(_UNSAID | given)), at=entry["at"]))
    rotation.append(session.connection(), keys_of(session), rows)


class _Rollback(Exception):
    """Raised into a chain's transaction to roll it back."""
