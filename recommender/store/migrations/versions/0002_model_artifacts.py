"""model artifacts in the store

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06 05:50:00

The joblib bytes and the JSON sidecar of each model move into its ``models`` row, so every
replica loads the promoted model without a shared volume; ``path`` (the optional export under
``model.dir``) becomes nullable. Existing rows keep their path and are still loaded from it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.add_column(sa.Column('artifact', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('sidecar', sa.JSON(), nullable=True))
        batch_op.alter_column('path', existing_type=sa.Text(), nullable=True)


def downgrade() -> None:
    # A model stored only in the table has no file to point at: it cannot survive a downgrade.
    op.execute(sa.text("DELETE FROM models WHERE path IS NULL"))
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.alter_column('path', existing_type=sa.Text(), nullable=False)
        batch_op.drop_column('sidecar')
        batch_op.drop_column('artifact')
