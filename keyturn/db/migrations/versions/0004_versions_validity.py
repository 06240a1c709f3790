"""versions.valid_from and versions.expires_at

Values that expire by themselves (TLS certificates) record their notBefore and notAfter, so
that a policy can make them due at a fraction of their lifetime (renew_at) as well as by age.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import keyturn.db.models

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("valid_from", keyturn.db.models.UtcDateTime(), nullable=True))
        batch_op.add_column(sa.Column("expires_at", keyturn.db.models.UtcDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("versions", schema=None) as batch_op:
        batch_op.drop_column("expires_at")
        batch_op.drop_column("valid_from")
