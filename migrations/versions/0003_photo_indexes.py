"""Indexes for photos looked up by task and by case.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX photos_task ON photos (task_id) WHERE task_id IS NOT NULL")
    op.execute("CREATE INDEX photos_case ON photos (case_id) WHERE case_id IS NOT NULL")


def downgrade() -> None:
    op.execute("DROP INDEX photos_case")
    op.execute("DROP INDEX photos_task")
