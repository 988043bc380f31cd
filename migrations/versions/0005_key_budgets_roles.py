"""api keys carry a role, spend caps and the counters the caps are checked against

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 15:00:00.000000

"""
from collections import defaultdict

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("api_keys") as batch_op:
        batch_op.add_column(sa.Column("role", sa.String(length=8), nullable=False,
                                      server_default="owner"))
        batch_op.add_column(sa.Column("cap_day_units", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("cap_month_units", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("cap_total_units", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("held_units", sa.BigInteger(), nullable=False,
                                      server_default="0"))
        batch_op.add_column(sa.Column("spent_day", sa.String(length=10), nullable=False,
                                      server_default=""))
        batch_op.add_column(sa.Column("spent_day_units", sa.BigInteger(), nullable=False,
                                      server_default="0"))
        batch_op.add_column(sa.Column("spent_month", sa.String(length=7), nullable=False,
                                      server_default=""))
        batch_op.add_column(sa.Column("spent_month_units", sa.BigInteger(), nullable=False,
                                      server_default="0"))
        batch_op.add_column(sa.Column("spent_total_units", sa.BigInteger(), nullable=False,
                                      server_default="0"))
        batch_op.create_check_constraint("key_held_nonnegative", "held_units >= 0")
        batch_op.create_check_constraint("key_role", "role IN ('owner', 'member')")
    _count_what_keys_spent_and_hold()


def _count_what_keys_spent_and_hold():
    """Start each key's counters from its usage records and open holds, as audit checks."""
    conn = op.get_bind()
    held = conn.execute(sa.text(
        "SELECT key_id, SUM(hold_units) FROM reservations WHERE state = 'open' "
        "AND key_id IS NOT NULL GROUP BY key_id")).all()
    days = conn.execute(sa.text(
        "SELECT key_id, day, SUM(cost_units) FROM usage_records WHERE key_id IS NOT NULL "
        "GROUP BY key_id, day")).all()
    counters = defaultdict(lambda: {"held": 0, "total": 0, "day": "", "day_units": 0,
                                    "month": "", "month_units": 0})
    for key_id, units in held:
        counters[key_id]["held"] = int(units or 0)
    by_day = defaultdict(dict)
    for key_id, day, units in days:
        by_day[key_id][str(day)[:10]] = int(units or 0)
    for key_id, spent in by_day.items():
        last = max(spent)
        row = counters[key_id]
        row["total"] = sum(spent.values())
        row["day"], row["day_units"] = last, spent[last]
        row["month"] = last[:7]
        row["month_units"] = sum(units for day, units in spent.items() if day[:7] == last[:7])
    for key_id, row in counters.items():
        conn.execute(sa.text(
            "UPDATE api_keys SET held_units = :held, spent_total_units = :total, "
            "spent_day = :day, spent_day_units = :day_units, spent_month = :month, "
            "spent_month_units = :month_units WHERE id = :id"), {**row, "id": key_id})


def downgrade():
    with op.batch_alter_table("api_keys") as batch_op:
        batch_op.drop_constraint("key_role", type_="check")
        batch_op.drop_constraint("key_held_nonnegative", type_="check")
        for column in ("spent_total_units", "spent_month_units", "spent_month",
                       "spent_day_units", "spent_day", "held_units", "cap_total_units",
                       "cap_month_units", "cap_day_units", "role"):
            batch_op.drop_column(column)
