"""Make accounts and keys for tests through the real account service."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from silk.pricing import usd_to_units


@dataclass
class TestAccount:
    """An account made for a test and its first key."""

    id: int
    key: str
    key_id: int

    @property
    def headers(self) -> dict[str, str]:
        """Authorization header for this account's key."""
        return {"Authorization": f"Bearer {self.key}"}


class AccountMaker:
    """Creates accounts with `make(...)` and reads their money back."""

    __test__ = False

    def __init__(self, app):
        self.app = app
        self.count = 0

    def make(self, *, tier: str = "free", credit: str | Decimal = "0", admin: bool = False,
             email: str | None = None) -> TestAccount:
        """Create an account with `credit` USD and return it with its key."""
        from silk.account.service import create_account
        from silk.billing.tiers import tiers

        self.count += 1
        with self.app.app_context():
            account, key = create_account(
                email or f"user{self.count}@example.com", tier=tier, known_tiers=tiers(),
                credit_units=usd_to_units(credit), is_admin=admin, actor="test")
            return TestAccount(account.id, key.secret, key.record.id)

    def balance_units(self, account_id: int) -> int:
        """The account's balance in units, read from the database."""
        from silk.account.models import Account
        from silk.extensions import db

        with self.app.app_context():
            account = db.session.get(Account, account_id)
            db.session.refresh(account)
            value = account.balance_units
            db.session.remove()
            return value

    def row(self, account_id: int):
        """The account row."""
        from silk.account.models import Account
        from silk.extensions import db

        with self.app.app_context():
            account = db.session.get(Account, account_id)
            db.session.refresh(account)
            db.session.remove()
            return account

    def audit(self) -> list[str]:
        """The books check's problems (empty when the books balance)."""
        from silk.extensions import db
        from silk.metering.audit import audit

        with self.app.app_context():
            return audit(db.engine)

    def usage_records(self, account_id: int):
        """Every usage record of an account, oldest first."""
        from silk.metering.models import UsageRecord

        return self._rows(UsageRecord, account_id)

    def ledger(self, account_id: int):
        """Every ledger entry of an account, oldest first."""
        from silk.metering.models import LedgerEntry

        return self._rows(LedgerEntry, account_id)

    def _rows(self, model, account_id: int) -> list:
        from sqlalchemy import select

        from silk.extensions import db

        with self.app.app_context():
            rows = list(db.session.scalars(select(model).where(
                model.account_id == account_id).order_by(model.id)))
            db.session.remove()
            return rows
