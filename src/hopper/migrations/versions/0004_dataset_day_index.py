"""Index files by dataset and time: every batch run counts its datasets' last 24 hours.

Without it, that count read every row of the ledger, a cost that grew with the day's files.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_files_dataset_day", "files", ["dataset", "updated_at", "state"])


def downgrade() -> None:
    op.drop_index("ix_files_dataset_day", table_name="files")
