"""a settled hold's reservation row is deleted; SQLite never reuses a reservation id

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 00:30:00.000000

Settlement now deletes the hold's row (silk.metering.store.claim_sql), so the rows of holds
settled before this revision go too; swept holds stay for a late correction. On SQLite the
table is rebuilt with AUTOINCREMENT, after the delete so that only the rows kept are
copied, and its sequence is set past the largest id ever given: without it a new row takes
the largest id plus one, which after a delete is a settled hold's id.
"""
import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade():
    bind = op.get_bind()
    given = bind.execute(sa.text("SELECT coalesce(max(id), 0) FROM reservations")).scalar()
    op.execute("DELETE FROM reservations WHERE state = 'settled'")
    if bind.dialect.name != "sqlite":
        return
    with op.batch_alter_table("reservations", recreate="always",
                              table_kwargs={"sqlite_autoincrement": True}):
        pass
    op.execute("DELETE FROM sqlite_sequence WHERE name = 'reservations'")
    bind.execute(sa.text("INSERT INTO sqlite_sequence (name, seq) SELECT 'reservations', "
                         "max(:given, coalesce(max(id), 0)) FROM reservations"),
                 {"given": given})


def downgrade():
    # The table stays AUTOINCREMENT: the code before this revision works with it, and
    # without it SQLite would give the ids of the deleted rows again.
    pass
