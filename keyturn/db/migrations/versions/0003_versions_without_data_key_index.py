"""versions without an index on data_key_id

Only the rekey's sweeps looked versions up by data key, and maintaining the index made every
re-sealed row cost two more B-tree updates (a full re-encrypt ran three times slower); the
sweeps now scan.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_versions_data_key_id"))


def downgrade() -> None:
    with op.batch_alter_table("versions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_versions_data_key_id"), ["data_key_id"], unique=False)
