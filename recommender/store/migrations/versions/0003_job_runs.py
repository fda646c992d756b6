"""job runs and batch posting claims

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 18:30:00

``job_runs`` records every run of a scheduled job, claimed before it starts (one running run
per job: a partial unique index), so two replicas, or a replica and a person at the CLI, never
run a job at once, and a new leader knows which fire times were missed. ``batches`` gains the
poster's claim (``posting_by``, ``posting_at``) so a batch is posted to Slack at most once.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from recommender.store.types import BigId, UTCDateTime

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'job_runs',
        sa.Column('id', BigId, autoincrement=True, nullable=False),
        sa.Column('job', sa.String(length=128), nullable=False),
        sa.Column('scheduled_for', UTCDateTime(), nullable=False),
        sa.Column('trigger', sa.String(length=16), nullable=False),
        sa.Column('claimed_by', sa.String(length=128), nullable=False),
        sa.Column('claimed_at', UTCDateTime(), nullable=False),
        sa.Column('expires_at', UTCDateTime(), nullable=False),
        sa.Column('finished_at', UTCDateTime(), nullable=True),
        sa.Column('outcome', sa.String(length=16), nullable=False),
        sa.Column('duration_seconds', sa.Float(), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_job_runs')),
    )
    op.create_index('ix_job_runs_job_scheduled_for', 'job_runs', ['job', 'scheduled_for'],
                    unique=False)
    op.create_index('ux_job_runs_running', 'job_runs', ['job'], unique=True,
                    sqlite_where=sa.text('finished_at IS NULL'),
                    postgresql_where=sa.text('finished_at IS NULL'))
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('posting_by', sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column('posting_at', UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.drop_column('posting_at')
        batch_op.drop_column('posting_by')
    op.drop_index('ux_job_runs_running', table_name='job_runs')
    op.drop_index('ix_job_runs_job_scheduled_for', table_name='job_runs')
    op.drop_table('job_runs')
