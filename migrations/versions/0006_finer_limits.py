"""finer limits: keys may cap their concurrent requests; operators set rate limits per
account and per account and model

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-04 15:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    # model "" is the whole account; a limit left NULL falls back to the operator's default.
    op.create_table(
        "account_limits",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("rpm_limit", sa.Integer(), nullable=True),
        sa.Column("tpm_limit", sa.Integer(), nullable=True),
        sa.Column("concurrency_limit", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name=op.f("fk_account_limits_account_id_accounts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account_limits")),
        sa.UniqueConstraint("account_id", "model", name=op.f("uq_account_limits_account_id")),
    )
    with op.batch_alter_table("api_keys") as batch_op:
        batch_op.add_column(sa.Column("concurrency_limit", sa.Integer(), nullable=True))


def downgrade():
    with op.batch_alter_table("api_keys") as batch_op:
        batch_op.drop_column("concurrency_limit")
    op.drop_table("account_limits")
