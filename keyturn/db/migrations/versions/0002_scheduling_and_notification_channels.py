"""scheduling and notification channels

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import keyturn.db.models

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "channels",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("base_dir", sa.Text(), nullable=False),
        sa.Column("updated_at", keyturn.db.models.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_channels")),
    )
    op.create_table(
        "scheduler_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("schedule", sa.String(length=100), nullable=False),
        sa.Column("slot", keyturn.db.models.UtcDateTime(), nullable=False),
        sa.Column("worker", sa.String(length=200), nullable=False),
        sa.Column("started_at", keyturn.db.models.UtcDateTime(), nullable=False),
        sa.Column("finished_at", keyturn.db.models.UtcDateTime(), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scheduler_runs")),
        sa.UniqueConstraint("schedule", "slot", name=op.f("uq_scheduler_runs_schedule")),
    )
    with op.batch_alter_table("credentials", schema=None) as batch_op:
        batch_op.add_column(sa.Column("due_at", keyturn.db.models.UtcDateTime(), nullable=True))
        batch_op.add_column(sa.Column("notice_at", keyturn.db.models.UtcDateTime(), nullable=True))
        batch_op.add_column(
            sa.Column("schedule", sa.String(length=100), nullable=False, server_default="0 2 * * *")
        )
        batch_op.create_index(batch_op.f("ix_credentials_due_at"), ["due_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_credentials_notice_at"), ["notice_at"], unique=False)

    with op.batch_alter_table("notices", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("recipient", sa.String(length=320), nullable=False, server_default="")
        )

    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("recipients", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_column("recipients")

    with op.batch_alter_table("notices", schema=None) as batch_op:
        batch_op.drop_column("recipient")

    with op.batch_alter_table("credentials", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_credentials_notice_at"))
        batch_op.drop_index(batch_op.f("ix_credentials_due_at"))
        batch_op.drop_column("schedule")
        batch_op.drop_column("notice_at")
        batch_op.drop_column("due_at")

    op.drop_table("scheduler_runs")
    op.drop_table("channels")
