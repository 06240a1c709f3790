"""account ownership and target grants

An account on a target (a login, a key owner) now belongs to exactly one credential: the
`accounts` table, unique on (target, account). Targets say which tenants may use them
(`targets.tenants`; NULL, "not declared", for existing ones: only unscoped admins put new
credentials on them, and what exists keeps working).

Existing credentials claim their accounts oldest first (created_at, then id). When two
already share an account, nothing is merged and nobody guesses silently: the oldest keeps the
account, every later one is held back (its target cleared, so nothing rotates it, and its
`dispute` says which credential holds the account), and each case is logged. The held-back
value stays stored; keyturn hands it out again once the credential is given an account of its
own (or it is deleted). `keyturn accounts --disputed` lists them.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import logging
import unicodedata
from typing import Any

import sqlalchemy as sa
from alembic import op

import keyturn.db.models

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

log = logging.getLogger("keyturn.migrate")


def _account_key(username: str) -> str:
    # Frozen copy of keyturn.inventory.grants.account_key as of this revision.
    return unicodedata.normalize("NFKC", username).strip().casefold()


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("target", sa.String(length=63), nullable=False),
        sa.Column("account", sa.String(length=200), nullable=False),
        sa.Column("username", sa.String(length=200), nullable=False),
        sa.Column("credential_id", sa.String(length=200), nullable=False),
        sa.Column("tenant_id", sa.String(length=63), nullable=False),
        sa.Column("created_at", keyturn.db.models.UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["credential_id"],
            ["credentials.id"],
            name=op.f("fk_accounts_credential_id_credentials"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["target"],
            ["targets.name"],
            name=op.f("fk_accounts_target_targets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("target", "account", name=op.f("uq_accounts_target")),
    )
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_accounts_credential_id"), ["credential_id"], unique=False
        )
    with op.batch_alter_table("targets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tenants", sa.JSON(), nullable=True))
    with op.batch_alter_table("credentials", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dispute", sa.Text(), nullable=True))
    _claim_existing()


def _claim_existing() -> None:
    credentials = sa.table(
        "credentials",
        sa.column("id", sa.String),
        sa.column("tenant_id", sa.String),
        sa.column("target", sa.String),
        sa.column("usernames", sa.JSON),
        sa.column("created_at", keyturn.db.models.UtcDateTime()),
        sa.column("due_at", keyturn.db.models.UtcDateTime()),
        sa.column("notice_at", keyturn.db.models.UtcDateTime()),
        sa.column("dispute", sa.Text),
    )
    accounts = sa.table(
        "accounts",
        sa.column("target", sa.String),
        sa.column("account", sa.String),
        sa.column("username", sa.String),
        sa.column("credential_id", sa.String),
        sa.column("tenant_id", sa.String),
        sa.column("created_at", keyturn.db.models.UtcDateTime()),
    )
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(credentials)
        .where(credentials.c.target.is_not(None))
        .order_by(credentials.c.created_at, credentials.c.id)
    ).all()
    held: dict[tuple[str, str], str] = {}
    for row in rows:
        names = [str(u) for u in (row.usernames or []) if u]
        mine = {(row.target, _account_key(u)): u for u in names}
        taken = [(u, held[key]) for key, u in mine.items() if key in held]
        if taken:
            _hold_back(conn, credentials, row, taken)
            continue
        for (target, key), username in mine.items():
            held[(target, key)] = row.id
            conn.execute(
                accounts.insert().values(
                    target=target,
                    account=key,
                    username=username,
                    credential_id=row.id,
                    tenant_id=row.tenant_id,
                    created_at=row.created_at,
                )
            )


def _hold_back(conn: Any, credentials: Any, row: Any, taken: list[tuple[str, str]]) -> None:
    username, holder = taken[0]
    dispute = (
        f"account {username!r} on target {row.target!r} also belongs to {holder} (declared "
        "earlier): migration 0004 detached this credential from the target; give it an account "
        "of its own (declare it again with another username) or delete it"
    )
    log.warning("credential %s held back: %s", row.id, dispute)
    conn.execute(
        credentials.update()
        .where(credentials.c.id == row.id)
        .values(target=None, due_at=None, notice_at=None, dispute=dispute)
    )


def downgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_accounts_credential_id"))
    op.drop_table("accounts")
    # ALTER TABLE ... DROP COLUMN (SQLite 3.35+): recreating these tables, as batch mode
    # would, fails on the foreign keys that point at them.
    with op.batch_alter_table("credentials", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("dispute")
    with op.batch_alter_table("targets", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("tenants")
