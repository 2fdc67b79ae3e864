"""Source clean-up: when an ingested version's source was archived or deleted, and where to.

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
    op.add_column("files", sa.Column("cleaned_at", sa.Float))
    op.add_column("files", sa.Column("cleanup", sa.String(20)))
    op.add_column("files", sa.Column("archived_uri", sa.Text))
    op.create_index("ix_files_cleanup", "files", ["state", "cleaned_at"])


def downgrade() -> None:
    op.drop_index("ix_files_cleanup", table_name="files")
    with op.batch_alter_table("files") as batch:
        batch.drop_column("archived_uri")
        batch.drop_column("cleanup")
        batch.drop_column("cleaned_at")
