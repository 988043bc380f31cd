"""alerts: an outbox of events and each account's alert settings

Revision ID: 0007
Revises: 0004
Create Date: 2026-12-04 15:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "alert_outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("recipients", sa.Text(), nullable=True),
        sa.Column("pending", sa.Text(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("claimed_by", sa.String(length=100), nullable=True),
        sa.Column("claim_until", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("delivered_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id"),
    )
    with op.batch_alter_table("alert_outbox") as batch_op:
        batch_op.create_index("ix_alert_outbox_due", ["state", "next_attempt_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_alert_outbox_account_id"), ["account_id"],
                              unique=False)
    with op.batch_alter_table("accounts") as batch_op:
        batch_op.add_column(sa.Column("alert_webhook_url", sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column("alert_webhook_secret", sa.String(length=64),
                                      nullable=True))
        batch_op.add_column(sa.Column("alert_email", sa.String(length=254), nullable=True))
        batch_op.add_column(sa.Column("alert_balance_units", sa.BigInteger(), nullable=True))


def downgrade():
    with op.batch_alter_table("accounts") as batch_op:
        batch_op.drop_column("alert_balance_units")
        batch_op.drop_column("alert_email")
        batch_op.drop_column("alert_webhook_secret")
        batch_op.drop_column("alert_webhook_url")
    with op.batch_alter_table("alert_outbox") as batch_op:
        batch_op.drop_index(batch_op.f("ix_alert_outbox_account_id"))
        batch_op.drop_index("ix_alert_outbox_due")
    op.drop_table("alert_outbox")
