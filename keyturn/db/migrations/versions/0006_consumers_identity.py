"""consumers: who they are (host, process, SDK version) and the fallbacks they made

A consumer registered by the SDK or `keyturn run` says where it runs, so `keyturn consumers
ID` and the revoke preview can name the process that would break; `fallbacks` counts the
times it had to fall back from the value it was given to another one (next, previous).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("consumers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("host", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("process", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("sdk_version", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("fallbacks", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("consumers", schema=None) as batch_op:
        batch_op.drop_column("fallbacks")
        batch_op.drop_column("sdk_version")
        batch_op.drop_column("process")
        batch_op.drop_column("host")
