"""abuse_counts: failed key checks and sign-ups per address, shared by workers without Redis

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08 11:00:00.000000

Without REDIS_URL each worker counted an address's failed key checks (and sign-ups) alone,
so gunicorn's N workers let a guesser try N times the limit. The counts now live in this
table, one row per limit and window; the sweep deletes ended windows.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "abuse_counts",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("ends_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade():
    op.drop_table("abuse_counts")
