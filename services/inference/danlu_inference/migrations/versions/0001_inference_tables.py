"""inference tables

Revision ID: 0001
Revises: 
Create Date: 2026-11-28 00:10:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('inference_deployments',
    sa.Column('project', sa.String(length=63), nullable=False),
    sa.Column('deployment_id', sa.String(length=63), nullable=False),
    sa.Column('model', sa.String(length=400), nullable=False),
    sa.Column('engine', sa.String(length=32), nullable=False),
    sa.Column('options', sa.JSON(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('model_digest', sa.String(length=80), nullable=False),
    sa.Column('error', sa.JSON(), nullable=True),
    sa.Column('model_info', sa.JSON(), nullable=False),
    sa.Column('request_id', sa.String(length=128), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('create_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('update_time', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('project', 'deployment_id')
    )
    with op.batch_alter_table('inference_deployments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_inference_deployments_request_id'), ['request_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('inference_deployments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_inference_deployments_request_id'))

    op.drop_table('inference_deployments')
