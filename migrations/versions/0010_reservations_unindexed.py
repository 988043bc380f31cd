"""reservations keep no secondary index: the table holds only holds in flight

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 20:10:00.000000

Since 0009 a settled hold's row is deleted, so the table holds the open holds and the few
swept ones: as many rows as requests in flight. Its readers (the sweep, the operator's
console, the count of open holds) read it whole or by id, and every hold and settlement
paid for the two indexes: four of the seventeen pages a SQLite request writes to the log,
and on PostgreSQL two index insertions per hold, whose entries outlive the deleted rows
until a vacuum.
"""
from alembic import op


# revision identifiers, used by Alembic.
revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("reservations") as batch_op:
        batch_op.drop_index("ix_reservations_state_expires")
        batch_op.drop_index("ix_reservations_account_id")


def downgrade():
    with op.batch_alter_table("reservations") as batch_op:
        batch_op.create_index("ix_reservations_account_id", ["account_id"], unique=False)
        batch_op.create_index("ix_reservations_state_expires", ["state", "expires_at"],
                              unique=False)
