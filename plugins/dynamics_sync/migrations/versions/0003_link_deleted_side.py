"""Which side a linked record disappeared from: record_links.deleted_side.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("record_links") as batch:
        batch.add_column(sa.Column("deleted_side", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("record_links") as batch:
        batch.drop_column("deleted_side")
