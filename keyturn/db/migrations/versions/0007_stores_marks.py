"""store_marks: what keyturn last wrote to each store, for check-and-set and drift

One row per (store, credential): the keyturn version published there, the store's own id of
that write (a KV version, an AWS version id), and what `keyturn verify` last found.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import keyturn.db.models

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "store_marks",
        sa.Column("store", sa.String(length=63), nullable=False),
        sa.Column("credential_id", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("mark", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("checked_at", keyturn.db.models.UtcDateTime(), nullable=True),
        sa.Column("updated_at", keyturn.db.models.UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["credential_id"],
            ["credentials.id"],
            name=op.f("fk_store_marks_credential_id_credentials"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["store"],
            ["stores.name"],
            name=op.f("fk_store_marks_store_stores"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("store", "credential_id", name=op.f("pk_store_marks")),
    )
    with op.batch_alter_table("store_marks", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_store_marks_credential_id"), ["credential_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("store_marks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_store_marks_credential_id"))
    op.drop_table("store_marks")
