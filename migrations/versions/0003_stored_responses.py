"""stored responses of the Responses API (store: true), kept per account until they expire

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 12:30:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('stored_responses',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('previous_response_id', sa.String(length=64), nullable=True),
    sa.Column('model', sa.String(length=128), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('input_items', sa.JSON(), nullable=False),
    sa.Column('response', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'],
                            name=op.f('fk_stored_responses_account_id_accounts'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_stored_responses'))
    )
    with op.batch_alter_table('stored_responses', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_stored_responses_account_id'), ['account_id'],
                              unique=False)
        batch_op.create_index('ix_stored_responses_expires_at', ['expires_at'], unique=False)


def downgrade():
    with op.batch_alter_table('stored_responses', schema=None) as batch_op:
        batch_op.drop_index('ix_stored_responses_expires_at')
        batch_op.drop_index(batch_op.f('ix_stored_responses_account_id'))
    op.drop_table('stored_responses')
