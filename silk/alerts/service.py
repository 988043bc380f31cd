"""Alert settings of an account, and the events that are not settlements: keys expiring,
routes failing."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal
from typing import Any

from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from silk.account.models import Account, ApiKey
from silk.alerts import outbox, signing
from silk.alerts.models import AlertEvent
from silk.alerts.safety import UnsafeUrl, check_url
from silk.database import utcnow
from silk.errors import InvalidRequest, NotFound
from silk.extensions import db
from silk.pricing import usd_to_units

log = logging.getLogger("silk.alerts")


def settings_of(account_id: int) -> Account:
    """The account whose alert settings are asked for."""
    account = db.session.get(Account, account_id)
    if account is None:
        raise NotFound("Account not found.")
    return account


def update_settings(account_id: int, data: Mapping[str, Any], *,
                    allow_private: bool) -> tuple[Account, str | None]:
    """Set the account's webhook URL, alert address and balance threshold (those given;
    null clears one). A new webhook URL gets a new signing secret, returned here only."""
    account = settings_of(account_id)
    secret = None
    if "webhook_url" in data:
        url = data["webhook_url"]
        if url:
            try:
                check_url(url, allow_private=allow_private)
            except UnsafeUrl as exc:
                raise InvalidRequest(f"Invalid 'webhook_url': {exc}.",
                                     param="webhook_url") from None
            if url != account.alert_webhook_url or not account.alert_webhook_secret:
                secret = signing.new_secret()
                account.alert_webhook_secret = secret
        else:
            account.alert_webhook_secret = None
        account.alert_webhook_url = url or None
    if "email" in data:
        account.alert_email = data["email"] or None
    if "balance_threshold" in data:
        amount: Decimal | None = data["balance_threshold"]
        account.alert_balance_units = None if amount is None else usd_to_units(amount)
    db.session.commit()
    return account, secret


def key_expiry_chore(days: float):
    """The sweep's chore: an event for each live key expiring within `days` days, once per
    key and expiry (the event id names both)."""
    def chore(engine: Engine) -> int:
        if days <= 0:
            return 0
        now = utcnow()
        with engine.begin() as conn:
            keys = conn.execute(select(ApiKey.id, ApiKey.account_id, ApiKey.name,
                                       ApiKey.prefix, ApiKey.expires_at).where(
                ApiKey.revoked_at.is_(None), ApiKey.expires_at.is_not(None),
                ApiKey.expires_at > now,
                ApiKey.expires_at <= now + timedelta(days=days))).all()
            return sum(outbox.record(
                conn, f"{outbox.KEY_EXPIRING}:{key.id}:{key.expires_at:%Y%m%dT%H%M%S}",
                outbox.KEY_EXPIRING, key.account_id,
                {"key_id": key.id, "key_name": key.name, "key_prefix": key.prefix,
                 "expires_at": key.expires_at.isoformat() + "Z"}, now) for key in keys)
    return chore


def route_listener(app: Flask):
    """A breaker's listener: a route that starts resting writes one event per rest period
    (workers that open the same route's breaker in one period write the same event id)."""
    rest = max(float(app.config["SILK_ROUTE_REST"]), 1.0)

    def changed(route: str, resting: bool) -> None:
        if not resting:
            return
        period = int(time.time() // rest)
        try:
            with app.app_context(), db.engine.begin() as conn:
                outbox.record(conn, f"{outbox.ROUTE_FAILING}:{route}:{period}",
                              outbox.ROUTE_FAILING, None,
                              {"route": route, "resting_seconds": rest}, utcnow())
        except DBAPIError as exc:  # the database is away too: nothing to write it to
            log.warning("route alert not recorded: %s", type(exc.orig).__name__)
        except Exception:  # noqa: BLE001 - an alert never fails the request that saw it
            log.exception("route alert not recorded")
    return changed



def counts_by_state(engine: Engine) -> dict[str, int]:
    """How many events are pending, delivered and failed (for the operator)."""
    with engine.connect() as conn:
        rows = conn.execute(select(AlertEvent.state, func.count()).group_by(
            AlertEvent.state)).all()
    return {"pending": 0, "delivered": 0, "failed": 0, **{state: n for state, n in rows}}
