"""Revenue, upstream cost and margin, summed from usage records; models sold below cost.

Both figures were decided when each request settled (silk.metering): this module only adds
them up, so a report's sums are the records' sums.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from silk.billing.service import served_and_failed
from silk.catalog.catalogue import Model
from silk.database import utcnow
from silk.metering.models import UsageRecord
from silk.schedule import RATES, below_cost_rates

USAGE = UsageRecord.__table__
GROUPINGS = ("model", "provider", "day")


@dataclass(frozen=True, slots=True)
class MarginRow:
    """One slice of a month: what customers paid, what providers billed, the difference."""

    key: str
    requests: int  # served (billed tokens), as in the usage report; failed ones cost nothing
    revenue_units: int
    upstream_cost_units: int

    @property
    def margin_units(self) -> int:
        """Revenue less upstream cost (negative: sold at a loss)."""
        return self.revenue_units - self.upstream_cost_units


def margin_rows(conn: Connection, start: date, end: date, by: str) -> list[MarginRow]:
    """The month's records grouped by model, provider or day, in key order."""
    column = USAGE.c[by]
    served = served_and_failed()[0]  # requests as every other report counts them
    query = (select(column, served, func.coalesce(func.sum(USAGE.c.cost_units), 0),
                    func.coalesce(func.sum(USAGE.c.upstream_cost_units), 0))
             .where(USAGE.c.day >= start, USAGE.c.day < end)
             .group_by(column).order_by(column))
    return [MarginRow(str(key), int(n), int(revenue), int(cost))
            for key, n, revenue, cost in conn.execute(query)]


def total(rows: list[MarginRow]) -> MarginRow:
    """The sum of a report's rows."""
    return MarginRow("total", sum(r.requests for r in rows),
                     sum(r.revenue_units for r in rows),
                     sum(r.upstream_cost_units for r in rows))


def models_below_cost(models: Mapping[str, Model]) -> dict[str, list[str]]:
    """Each model whose list price is below the upstream price of any of its routes at some
    time from now on and some prompt size, with the rates that are (list prices: before any
    tier discount); every route counts, as any may serve a request at the model's price."""
    now = utcnow()
    found = {}
    for model in models.values():
        costs = [route.cost_pricing for route in model.routes] or [model.cost_pricing]
        below = {rate for cost in costs if cost is not None and model.pricing is not None
                 for rate in below_cost_rates(model.pricing, cost, now)}
        if below:
            found[model.id] = [rate for rate in RATES if rate in below]
    return found
