"""a settled hold's reservation row is deleted; SQLite never reuses a reservation id

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 00:30:00.000000

Settlement now deletes the hold's row (silk.metering.store.claim_sql), so the rows of holds
settled before this revision go too; swept holds stay for a late correction. On SQLite the
table is rebuilt with AUTOINCREMENT first: without it a new row takes the largest id plus
one, which after a delete is a settled hold's id. Rebuilt with every row, the table's
sequence starts past the largest id ever given, settled holds' included.
"""
from alembic import op


# revision identifiers, used by Alembic.
revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade():
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("reservations", recreate="always",
                                  table_kwargs={"sqlite_autoincrement": True}):
            pass
    op.execute("DELETE FROM reservations WHERE state = 'settled'")


def downgrade():
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("reservations", recreate="always",
                                  table_kwargs={"sqlite_autoincrement": False}):
            pass
