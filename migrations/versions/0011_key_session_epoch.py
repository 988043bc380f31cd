"""api keys carry the generation of the sessions signed in with them (a sign-out ends copies)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08 10:00:00.000000

A dashboard or console session is a signed cookie: clearing it at sign-out left any copy of
it good until the session's hours ran out. A session now remembers its key's
`session_epoch` at sign-in and is good only while the key still has it; a sign-out (and
disabling the account) moves it on. Sessions signed in before the upgrade carry none, so
they ask for the key once more.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("session_epoch", sa.Integer(), nullable=False,
                                      server_default="0"))


def downgrade():
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("session_epoch")
