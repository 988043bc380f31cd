"""Top-up: nobody mints money. Operators credit accounts, users redeem operator-issued codes,
and a plain amount is self-service only where the operator turned open top-up on.

Each path is one transaction holding the Idempotency-Key record, the code claim (if any) and
the ledger entry, so a retry or a race can never credit twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, localcontext
from functools import partial
from typing import NoReturn

from sqlalchemy import or_, select, update
from sqlalchemy.engine import Connection, Engine

from silk.account.auth import Principal, holds_admin_key
from silk.account.keys import hash_secret
from silk.account.models import Account
from silk.billing.idempotency import ReplayableAnswer, fingerprint, run_once
from silk.billing.models import RedemptionCode
from silk.database import utcnow
from silk.errors import Conflict, InvalidRequest, NotFound, PermissionDenied
from silk.metering.ledger import Entry, credit_entry
from silk.pricing import units_to_usd, usd_to_units
from silk.validation import MOST_ID, whole_number

CODES = RedemptionCode.__table__
ACCOUNTS = Account.__table__
CENT = Decimal("0.01")
OPERATOR_KINDS = ("topup", "refund", "adjustment")
# A balance is a BIGINT of nano-dollars (at most ~9.2e9 USD): no one amount may near that.
CEILING = Decimal(10**9)


@dataclass(frozen=True, slots=True)
class Policy:
    """What the operator allows: open self-service top-up, and the most one top-up may add."""

    open_topup: bool
    maximum: Decimal


def check_amount(amount: Decimal, maximum: Decimal, *, param: str = "amount") -> int:
    """Return a top-up amount in units: positive, whole cents, at most `maximum` USD."""
    maximum = min(maximum, CEILING)
    if amount <= 0:
        raise InvalidRequest(f"Invalid '{param}': must be greater than 0.", param=param)
    if amount > maximum:
        raise InvalidRequest(f"Invalid '{param}': at most ${maximum} per top-up.", param=param)
    with localcontext(prec=60):  # exact for any amount an operator could allow
        whole_cents = amount == amount.quantize(CENT)
    if not whole_cents:
        raise InvalidRequest(f"Invalid '{param}': at most 2 decimal places.", param=param)
    return usd_to_units(amount)


def check_adjustment(amount: Decimal, maximum: Decimal, kind: str) -> int:
    """Return an operator's credit in units; only an adjustment may be negative."""
    maximum = min(maximum, CEILING)
    if kind not in OPERATOR_KINDS:
        raise InvalidRequest(f"Invalid 'kind': one of {', '.join(OPERATOR_KINDS)}.",
                             param="kind")
    if kind == "topup":
        return check_amount(amount, maximum)
    if amount == 0 or (amount < 0 and kind != "adjustment"):
        raise InvalidRequest("Invalid 'amount': must not be 0; only an adjustment may be "
                             "negative.", param="amount")
    if abs(amount) > maximum:
        raise InvalidRequest(f"Invalid 'amount': at most ${maximum} either way.", param="amount")
    units = usd_to_units(amount)
    if units_to_usd(units) != amount:
        raise InvalidRequest("Invalid 'amount': at most 9 decimal places.", param="amount")
    return units


def _receipt(entry: Entry, kind: str) -> dict:
    return {"object": "topup", "account_id": entry.account_id, "kind": kind,
            "credited": units_to_usd(entry.amount_units),
            "balance": units_to_usd(entry.balance_after_units), "currency": "USD",
            "transaction_id": entry.id}


def resolve_account(conn: Connection, ref: int | str) -> int:
    """An account id from an id or an email address; 404 when there is none."""
    # Digits are an id (past any id, they are nobody's address either).
    number = ref if isinstance(ref, int) else whole_number(ref.strip(), MOST_ID)
    column = ACCOUNTS.c.id if number is not None else ACCOUNTS.c.email
    value = number if number is not None else ref.strip().lower()
    # No address holds a NUL, which PostgreSQL's text refuses: such a one is nobody's.
    account_id = None if "\x00" in str(value) else conn.execute(
        select(ACCOUNTS.c.id).where(column == value)).scalar()
    if account_id is None:
        raise NotFound(f"No account {ref}.", param="account", code="account_not_found")
    return account_id


def redeem(conn: Connection, account_id: int, code: str, *, actor: str,
           request_id: str | None = None) -> Entry:
    """Claim a redemption code for `account_id` and credit its amount, in the caller's txn."""
    now = utcnow()
    code_hash = hash_secret(code.strip())
    # The guarded UPDATE is the claim: of any number of concurrent redeemers, one matches.
    row = conn.execute(
        update(CODES)
        .where(CODES.c.code_hash == code_hash, CODES.c.redeemed_at.is_(None),
               or_(CODES.c.expires_at.is_(None), CODES.c.expires_at > now))
        .values(redeemed_at=now, redeemed_by=account_id)
        .returning(CODES.c.amount_units, CODES.c.prefix)
    ).first()
    if row is None:
        _refuse_code(conn, code_hash)
    return credit_entry(conn, account_id, row.amount_units, kind="redeem",
                        note=f"code {row.prefix}", actor=actor, request_id=request_id)


def _refuse_code(conn: Connection, code_hash: str) -> NoReturn:
    known = conn.execute(select(CODES.c.redeemed_at).where(CODES.c.code_hash == code_hash)).first()
    if known is None:
        raise InvalidRequest("Unknown redemption code.", param="code", code="invalid_code")
    if known.redeemed_at is not None:
        raise Conflict("This redemption code has already been used.", param="code",
                       code="code_already_redeemed")
    raise InvalidRequest("This redemption code has expired.", param="code", code="code_expired")


def topup(engine: Engine, principal: Principal, data: dict, policy: Policy, *,
          idempotency_key: str | None, request_id: str | None = None) -> ReplayableAnswer:
    """Apply POST /v1/topup for `principal`: redeem a code, or credit an amount."""
    actor = f"key:{principal.key_id}"
    if data.get("code") is not None:
        if data.get("amount") is not None or data.get("account") is not None:
            raise InvalidRequest("Send either 'code' or 'amount', not both.", param="code")
        action = partial(_redeem_for, principal.account_id, data["code"], actor, request_id)
    elif data.get("amount") is not None:
        admin = holds_admin_key(principal)
        units = _authorised_amount(admin, data, policy)
        note = data.get("note") or ("operator top-up" if admin else "self-service top-up")
        action = partial(_credit_to, data.get("account", principal.account_id), units, note,
                         actor, request_id)
    else:
        raise InvalidRequest("Send 'amount' (USD) or 'code' (a redemption code).",
                             param="amount", code="missing_amount")
    return run_once(engine, account_id=principal.account_id, key=idempotency_key,
                    fingerprint=fingerprint("POST /v1/topup", _canonical(data)), action=action)


def _authorised_amount(admin: bool, data: dict, policy: Policy) -> int:
    units = check_amount(data["amount"], policy.maximum)
    if admin:
        return units
    if data.get("account") is not None:
        raise PermissionDenied("Only an admin key (an owner key of an admin account, without "
                               "limits) may credit another account.",
                               param="account", code="admin_required")
    if not policy.open_topup:
        raise PermissionDenied(
            "Self-service top-up by amount is turned off here: redeem a code with "
            '{"code": "..."}, or ask the operator to credit your account.',
            param="amount", code="topup_not_allowed")
    return units


def _redeem_for(account_id: int, code: str, actor: str, request_id: str | None,
                conn: Connection) -> tuple[int, dict]:
    entry = redeem(conn, account_id, code, actor=actor, request_id=request_id)
    return 200, _receipt(entry, "redeem")


def _credit_to(ref: int | str, units: int, note: str, actor: str, request_id: str | None,
               conn: Connection) -> tuple[int, dict]:
    entry = credit_entry(conn, resolve_account(conn, ref), units, kind="topup", note=note,
                         actor=actor, request_id=request_id)
    return 200, _receipt(entry, "topup")


def operator_credit(engine: Engine, *, account_id: int, units: int, kind: str, note: str,
                    actor: str, caller_account_id: int | None = None,
                    idempotency_key: str | None = None,
                    request_id: str | None = None) -> ReplayableAnswer:
    """Credit, refund or adjust any account as an operator, at most once per key."""
    def action(conn: Connection) -> tuple[int, dict]:
        """Write the entry inside run_once's transaction."""
        entry = credit_entry(conn, account_id, units, kind=kind, note=note, actor=actor,
                             request_id=request_id)
        return 200, _receipt(entry, kind)

    body = {"account": account_id, "units": units, "kind": kind, "note": note}
    key = idempotency_key if caller_account_id is not None else None
    return run_once(engine, account_id=caller_account_id, key=key,
                    fingerprint=fingerprint("operator credit", body), action=action)


def _canonical(data: dict) -> dict:
    return {k: str(v) if isinstance(v, Decimal) else v for k, v in data.items()}
