"""conversion tables

Revision ID: 0001
Revises:
Create Date: 2026-11-28 01:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conversion_jobs",
        sa.Column("project", sa.String(length=63), nullable=False),
        sa.Column("job_id", sa.String(length=63), nullable=False),
        sa.Column("state", sa.Integer(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("last_sequence", sa.BigInteger(), nullable=False),
        sa.Column("job", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("project", "job_id"),
    )
    op.create_index("ix_conversion_jobs_state", "conversion_jobs", ["state"])
    op.create_index("ix_conversion_jobs_create_time", "conversion_jobs", ["create_time"])
    op.create_table(
        "conversion_events",
        sa.Column("project", sa.String(length=63), nullable=False),
        sa.Column("job_id", sa.String(length=63), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("event", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("project", "job_id", "sequence"),
    )


def downgrade() -> None:
    op.drop_table("conversion_events")
    op.drop_index("ix_conversion_jobs_create_time", table_name="conversion_jobs")
    op.drop_index("ix_conversion_jobs_state", table_name="conversion_jobs")
    op.drop_table("conversion_jobs")
