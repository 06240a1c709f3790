"""Before anything is written: are the configured keys the ones this database needs?"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from keyturn.crypto import envelope
from keyturn.crypto.keys import MasterKey
from keyturn.db.models import DataKey, Meta, Version
from keyturn.db.vault import KEYSET, LEGACY_FINGERPRINT_KEY, REKEY_STATE, master_key_ids_in_use
from keyturn.domain.errors import UsageError, WrongMasterKey

REMOVE_OLD = (
    "nothing is encrypted under KEYTURN_OLD_MASTER_KEY any more (the rekey is complete): "
    "remove KEYTURN_OLD_MASTER_KEY (or KEYTURN_OLD_MASTER_KEY_FILE)"
)


@dataclass
class State:
    """The `meta` row of a rekey under way: which keys, and the data keys to retire."""

    new: str
    old: str | None
    data_keys: bool
    retire: list[str] = field(default_factory=list)

    def dump(self) -> bytes:
        return json.dumps(self.__dict__).encode()

    @classmethod
    def load(cls, raw: bytes) -> State:
        return cls(**json.loads(raw))


@dataclass(frozen=True)
class Plan:
    new: MasterKey
    old: MasterKey | None
    data_keys: bool
    resumed: State | None
    to_rewrap: int
    keys_rewrap: bool
    versions: int

    @property
    def nothing_to_do(self) -> bool:
        return not (self.to_rewrap or self.keys_rewrap or self.data_keys or self.resumed)


def read_state(session: Session) -> State | None:
    row = session.get(Meta, REKEY_STATE)
    return State.load(row.value) if row is not None else None


def plan(session: Session, new: MasterKey, old: MasterKey | None, data_keys: bool) -> Plan:
    """Check the keys against the rows; raise before the first write if they do not fit."""
    state = read_state(session)
    if state is not None and state.new != new.id:
        raise UsageError(
            f"a rekey to master key {state.new} is under way; set KEYTURN_MASTER_KEY to that "
            "key and run `keyturn rekey` again to finish it"
        )
    in_use = master_key_ids_in_use(session)
    known = {new.id} | ({old.id} if old else set())
    unknown = sorted(in_use - known)
    if unknown and old is not None:
        raise WrongMasterKey(
            f"the old master key ({old.id}, from KEYTURN_OLD_MASTER_KEY or its _FILE) is not "
            "the key that encrypted this database "
            f"(it is wrapped by {', '.join(unknown)}); nothing was changed"
        )
    if unknown:
        raise WrongMasterKey()
    if old is not None and old.id not in in_use and state is None:
        raise UsageError(REMOVE_OLD)
    _prove(session, {k.id: k for k in (new, old) if k is not None}, in_use)
    to_rewrap = session.scalar(
        select(func.count()).select_from(DataKey).where(DataKey.master_key_id != new.id)
    )
    # A database not yet opened since 0005 has its legacy fingerprint key instead; opening
    # it (the Vault) upgrades it to a key set sealed under the new key.
    keys = session.get(Meta, KEYSET) or session.get(Meta, LEGACY_FINGERPRINT_KEY)
    versions = session.scalar(select(func.count()).select_from(Version))
    return Plan(
        new=new,
        old=old,
        data_keys=data_keys or bool(state and state.data_keys),
        resumed=state,
        to_rewrap=int(to_rewrap or 0),
        keys_rewrap=keys is not None and keys.master_key_id != new.id,
        versions=int(versions or 0),
    )


def _prove(session: Session, masters: dict[str, MasterKey], in_use: set[str]) -> None:
    """Open one data key per master key in use: an id match is not yet a working key."""
    for master_id in sorted(in_use):
        row = session.execute(
            select(DataKey).where(DataKey.master_key_id == master_id).limit(1)
        ).scalar_one_or_none()
        if row is None:
            continue
        try:
            envelope.unwrap(masters, envelope.WrappedKey(row.id, master_id, row.wrapped))
        except WrongMasterKey as exc:
            raise WrongMasterKey(
                f"data key {row.id} does not open with master key {master_id}: the row was "
                "altered; restore it from a backup; nothing was changed"
            ) from exc
