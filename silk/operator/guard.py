"""Who may use the console: a signed-in admin key, re-checked on every request, and forms
that carry the session's CSRF token from this site only (the dashboard's rules)."""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass

from flask import current_app, request, session

from silk.account.models import Account, ApiKey
from silk.account.service import admin_limit, end_sessions, key_usable
from silk.cors import same_host
from silk.extensions import db

_FIELDS = ("op_account_id", "op_key_id", "op_since", "op_epoch", "op_csrf")


@dataclass(frozen=True)
class Operator:
    """The admin behind this session: the account and the key it signed in with."""

    account_id: int
    key_id: int
    email: str
    key_prefix: str
    session_epoch: int  # the key's, as read with it (see ApiKey.session_epoch)


def admin_key(key: ApiKey | None) -> Operator | None:
    """The operator a key stands for, read from the database now: None unless the key is
    usable (not revoked or expired, its account enabled), an owner key without limits, and
    its account is an admin's (a member key of an admin account is no admin key, nor is one
    with limits, as on the admin API)."""
    if key is None:
        return None
    db.session.refresh(key)  # what the database says now, not a cached copy
    if not key_usable(key) or key.role != "owner" or admin_limit(key) is not None:
        return None
    account = db.session.get(Account, key.account_id)
    if account is None or not account.is_admin:
        return None
    return Operator(account.id, key.id, account.email, key.prefix, key.session_epoch)


def current_operator() -> Operator | None:
    """The session's operator while its key is still an admin's, the session is fresh and
    no sign-out ended the key's sessions since it began (a copied cookie is refused then)."""
    account_id, key_id = session.get("op_account_id"), session.get("op_key_id")
    if account_id is None or key_id is None:
        return None
    hours = current_app.config["SILK_CONSOLE_SESSION_HOURS"]
    if time.time() - session.get("op_since", 0) >= hours * 3600:
        sign_out()
        return None
    key = db.session.get(ApiKey, key_id)
    operator = admin_key(key) if key is not None and key.account_id == account_id else None
    if operator is not None and session.get("op_epoch") != operator.session_epoch:
        operator = None
    if operator is None:
        sign_out()
    return operator


def sign_in(operator: Operator) -> None:
    """Start a console session with a new CSRF token (the dashboard's session is left as is)."""
    sign_out()
    session.permanent = False
    session.update(op_account_id=operator.account_id, op_key_id=operator.key_id,
                   op_since=time.time(), op_epoch=operator.session_epoch)
    csrf_token()


def held() -> dict:
    """The console session this cookie holds, as stored: a dashboard sign-in keeps it."""
    return {name: session[name] for name in _FIELDS if name in session}


def sign_out() -> None:
    """Forget the console session."""
    for name in _FIELDS:
        session.pop(name, None)


def end_session() -> None:
    """Sign out for good: end every console and dashboard session of the session's key, so a
    copy of this cookie is refused too, then forget it here."""
    operator = current_operator()
    if operator is not None:
        end_sessions(operator.key_id)
    db.session.close()
    sign_out()


def csrf_token() -> str:
    """The console session's CSRF token, made on first use; every console form posts it."""
    token = session.get("op_csrf")
    if not token:
        token = session["op_csrf"] = secrets.token_urlsafe(32)
    return token


def refusal() -> str | None:
    """Why a POST must be refused ('origin' or 'token'), or None when it may proceed."""
    origin = request.headers.get("Origin")
    # Host names only, as the dashboard: behind a proxy the scheme and port may differ.
    if origin and not same_host(origin, request.host):
        return "origin"
    sent = request.form.get("csrf_token", "")
    expected = session.get("op_csrf", "")
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        return "token"
    return None
