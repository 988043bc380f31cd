"""Every SQLAlchemy model in one import, so migrations and the shell see the whole schema."""

from silk.abuse import AbuseCount
from silk.account.models import Account, AccountLimit, ApiKey, InviteCode
from silk.alerts.models import AlertEvent
from silk.billing.models import IdempotencyRecord, RedemptionCode, TierRecord
from silk.metering.models import LedgerEntry, Reservation, UsageRecord
from silk.responses.models import StoredResponse

__all__ = ["AbuseCount", "Account", "AccountLimit", "AlertEvent", "ApiKey",
           "IdempotencyRecord", "InviteCode", "LedgerEntry",
           "RedemptionCode", "Reservation", "StoredResponse", "TierRecord", "UsageRecord"]
