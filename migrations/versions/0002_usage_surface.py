"""usage records name the surface (public API) each request came through

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 11:50:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("usage_records") as batch_op:
        batch_op.add_column(sa.Column("surface", sa.String(length=16), nullable=False,
                                      server_default=""))
    # Every request before this revision came through chat completions.
    op.execute("UPDATE usage_records SET surface = 'chat' WHERE status <> 'swept'")


def downgrade():
    with op.batch_alter_table("usage_records") as batch_op:
        batch_op.drop_column("surface")
