"""store tenants

`stores.tenants` says which tenants' credentials a store may hold, as `targets.tenants`
does for targets: NULL (not declared: only unscoped admins attach credentials to it) or a
list of tenant names.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stores", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tenants", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("stores", schema=None) as batch_op:
        batch_op.drop_column("tenants")
