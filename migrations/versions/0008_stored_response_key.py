"""stored responses name the key that made them (a member key sees only its own)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 16:20:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('stored_responses', schema=None) as batch_op:
        batch_op.add_column(sa.Column('key_id', sa.Integer(), nullable=True))


def downgrade():
    with op.batch_alter_table('stored_responses', schema=None) as batch_op:
        batch_op.drop_column('key_id')
