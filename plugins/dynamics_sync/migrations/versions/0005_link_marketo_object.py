"""Links to Marketo objects (companies, opportunities, ...): record_links.marketo_object; marketo_id nullable.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("record_links") as batch:
        batch.add_column(sa.Column("marketo_object", sa.String(64), nullable=False, server_default="leads"))
        batch.alter_column("marketo_id", existing_type=sa.BigInteger, nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("record_links") as batch:
        batch.alter_column("marketo_id", existing_type=sa.BigInteger, nullable=False)
        batch.drop_column("marketo_object")
