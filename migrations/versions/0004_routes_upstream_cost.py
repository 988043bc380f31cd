"""usage records keep the route that served each request and what it cost upstream

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 12:40:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("usage_records") as batch_op:
        # Earlier requests had no upstream price configured: their cost is unknown, kept 0.
        batch_op.add_column(sa.Column("upstream_cost_units", sa.BigInteger(), nullable=False,
                                      server_default="0"))
        # Earlier requests each had one route, named by their provider and upstream model.
        batch_op.add_column(sa.Column("route", sa.String(length=64), nullable=False,
                                      server_default=""))
    op.execute("UPDATE usage_records SET route = provider || '/' || upstream_model "
               "WHERE provider <> ''")


def downgrade():
    with op.batch_alter_table("usage_records") as batch_op:
        batch_op.drop_column("route")
        batch_op.drop_column("upstream_cost_units")
