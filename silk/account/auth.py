"""Who is calling: read the key from the request, look it up (briefly cached), check it."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from datetime import datetime

from flask import current_app
from sqlalchemy import select, update

from silk.account.keys import hash_secret
from silk.account.models import Account, AccountLimit, ApiKey
from silk.account.service import acting_key, admin_limit
from silk.appctx import this_app, this_g, this_request
from silk.cache import ExpiringCache
from silk.clientaddr import client_address
from silk.database import utcnow
from silk.errors import AuthenticationFailed, PermissionDenied, RateLimited
from silk.extensions import db
from silk.sqlite_writes import write_begin

_MAX_KEY_LENGTH = 256
_LAST_USED_EVERY = 60.0  # seconds between last_used_at writes for one key
_FAILURE_WINDOW = 60  # seconds over which an address's failed key checks are counted
_BAD_KEY_TTL = 2.0  # seconds an unknown key is refused without asking the database again


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated key and the facts about its account that every request needs."""

    key_id: int
    key_hash: str
    account_id: int
    is_admin: bool
    allowed_models: frozenset[str] | None
    rpm_limit: int | None
    tpm_limit: int | None
    expires_at: datetime | None
    concurrency_limit: int | None = None
    # The operator's limits for the account: (model, rpm, tpm, concurrency), model "" for
    # the whole account. Cached with the key; a change drops the account's keys.
    account_limits: tuple[tuple[str, int | None, int | None, int | None], ...] = ()
    role: str = "owner"
    capped: bool = False  # the key had spend caps when it was read (metering checks them)

    @property
    def is_owner(self) -> bool:
        """True for an owner key: it manages keys and sees the whole account."""
        return self.role == "owner"

    def may_use(self, model_id: str) -> bool:
        """True when the key is not limited to other models."""
        return self.allowed_models is None or model_id in self.allowed_models

    def limits_for(self, model: str) -> tuple[int | None, int | None, int | None]:
        """The operator's (rpm, tpm, concurrency) for the account on `model` ("": the
        account as a whole); Nones where the operator set none."""
        for name, rpm, tpm, concurrency in self.account_limits:
            if name == model:
                return rpm, tpm, concurrency
        return None, None, None


class KeyCache(ExpiringCache[str, Principal | None]):
    """Per-process cache of key lookups, so the hot path seldom touches the database.

    A cached None is a key the database does not know, refused for a short while without
    asking again, to blunt guessing.
    """

    def __init__(self, ttl: float, max_entries: int = 50_000):
        super().__init__(ttl, max_entries)
        self._last_used: dict[int, float] = {}
        self._blocked: dict[str, float] = {}  # address -> monotonic time its block ends

    def blocked_for(self, address: str) -> float:
        """Seconds left on an address's block for failed key checks (0 when not blocked)."""
        until = self._blocked.get(address)
        if until is None:
            return 0.0
        left = until - time.monotonic()
        if left <= 0:
            self._blocked.pop(address, None)
            return 0.0
        return left

    def block(self, address: str, seconds: float) -> None:
        """Refuse key checks from an address for a while."""
        with self._lock:
            if len(self._blocked) >= self.max_entries:
                self._blocked.clear()
            self._blocked[address] = time.monotonic() + seconds

    def forget_account(self, account_id: int) -> None:
        """Drop the account's keys, and every unknown-key answer (some may be its keys)."""
        with self._lock:
            self._generation += 1
            stale = [key for key, (_, principal) in self._entries.items()
                     if principal is None or principal.account_id == account_id]
            for key in stale:
                self._entries.pop(key, None)

    def due_for_touch(self, key_id: int) -> bool:
        """True at most once a minute per key: time to write last_used_at."""
        now = time.monotonic()
        if now - self._last_used.get(key_id, 0.0) < _LAST_USED_EVERY:
            return False
        self._last_used[key_id] = now
        return True


def key_cache() -> KeyCache:
    """The app's key cache, made on first use."""
    app = this_app()
    cache = app.extensions.get("silk.keycache")
    if cache is None:
        cache = app.extensions["silk.keycache"] = KeyCache(app.config["SILK_KEY_CACHE_TTL"])
    return cache


def presented_key() -> str | None:
    """Read the key from `Authorization: Bearer`, then `X-Api-Key`, then `?api_key=`.

    An Authorization header that is not `Bearer <key>` (a bare key, another scheme, nothing
    after `Bearer`) is a 401 saying so, unless the key came another documented way: a proxy
    in front may use the header for itself. A header sent several times reaches the app as
    one, its values joined by commas (gunicorn, werkzeug), which no key contains: the same
    key repeated is that key, different keys are a 401 saying several were sent.
    """
    req = this_request()
    header = req.headers.get("Authorization", "").strip()
    if header:
        bearer = _one_key(_bearer_keys(header), "Authorization headers")
        if bearer:
            return bearer
    value = req.headers.get("X-Api-Key", "").strip()
    if "," in value:
        value = _one_key(_listed(value), "X-Api-Key headers") or ""
    if not value:
        value = _one_key(_listed(",".join(req.args.getlist("api_key"))),
                         "api_key query parameters") or ""
    if value:
        return value
    if header:
        raise AuthenticationFailed(
            f"Malformed Authorization header: {_malformed(header)}. It must be "
            "'Authorization: Bearer <key>', e.g. 'Bearer sk-...'.",
            code="invalid_authorization_header")
    return None


def _bearer_keys(header: str) -> list[str]:
    """The keys of the `Bearer <key>` credentials in an Authorization header (several if
    the header was sent several times)."""
    keys = []
    for part in header.split(",") if "," in header else (header,):
        scheme, _, value = part.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            keys.append(value.strip())
    return keys


def _listed(value: str) -> list[str]:
    """The keys of a header or parameter sent several times, joined by commas."""
    return [part.strip() for part in value.split(",") if part.strip()]


def _one_key(keys: list[str], where: str) -> str | None:
    """The one key among those sent one way; 401 if they differ."""
    if not keys:
        return None
    if any(key != keys[0] for key in keys[1:]):
        raise AuthenticationFailed(
            f"Several different API keys were sent ({where}); send one key, once.",
            code="several_api_keys")
    return keys[0]


def _also_sent(secret: str) -> str:
    """For a refused key: a note naming where a different key was also sent, if one was,
    since only the first of Authorization, X-Api-Key and ?api_key= is checked."""
    req = this_request()
    sources = (("the Authorization header", _bearer_keys(req.headers.get("Authorization", ""))),
               ("the X-Api-Key header", _listed(req.headers.get("X-Api-Key", ""))),
               ("the api_key query parameter", _listed(",".join(req.args.getlist("api_key")))))
    used = next((name for name, keys in sources if secret in keys), None)
    other = next((name for name, keys in sources
                  if name != used and any(key != secret for key in keys)), None)
    if used is None or other is None:
        return ""
    return (f" The key checked is the one in {used}; {other} carried a different key, which "
            "is not checked (Authorization is read first, then X-Api-Key, then api_key).")


def _malformed(header: str) -> str:
    """What is wrong with an Authorization header that is not `Bearer <key>`, never its value."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return "no key after 'Bearer'"
    if not value.strip():
        return "the key is not preceded by 'Bearer '"
    return "it uses another scheme than 'Bearer'"


def _load(key_hash: str) -> Principal | None:
    row = db.session.execute(
        select(ApiKey, Account.is_admin, Account.disabled)
        .join(Account, Account.id == ApiKey.account_id)
        .where(ApiKey.key_hash == key_hash)
    ).first()
    db.session.close()
    if row is None:
        return None
    key, is_admin, disabled = row
    # The index found the row; compare again in constant time, as if it had not.
    if not hmac.compare_digest(key.key_hash, key_hash) or key.revoked_at or disabled:
        return None
    limits = db.session.execute(
        select(AccountLimit.model, AccountLimit.rpm_limit, AccountLimit.tpm_limit,
               AccountLimit.concurrency_limit).where(AccountLimit.account_id == key.account_id)
    ).all()
    db.session.close()
    return Principal(
        key_id=key.id, key_hash=key_hash, account_id=key.account_id, is_admin=is_admin,
        allowed_models=frozenset(key.allowed_models) if key.allowed_models else None,
        rpm_limit=key.rpm_limit, tpm_limit=key.tpm_limit, expires_at=key.expires_at,
        role=key.role, capped=not (key.cap_day_units is None and key.cap_month_units is None
                                   and key.cap_total_units is None),
        concurrency_limit=key.concurrency_limit,
        account_limits=tuple((str(m), r, t, c) for m, r, t, c in limits),
    )


def _lifetime(principal: Principal | None) -> float | None:
    return None if principal else _BAD_KEY_TTL


def guard_address() -> None:
    """Refuse (429) any key check from an address that failed too many of them lately.

    Checked before the key is looked at, so a blocked guesser learns nothing, not even
    whether a guess was right.
    """
    left = key_cache().blocked_for(client_address())
    if left:
        raise _too_many_failures(left)


def count_failure() -> None:
    """Count a failed key check against the caller's address; block it past the limit.

    The count is shared by every worker and host through the limiter (Redis, else the
    database), and each worker remembers a block locally, so a blocked address costs no
    round trip. The request's session gives its connection back first: counting in the
    database takes one, and guesses that each held one while waiting for another would
    empty the pool.
    """
    limit = current_app.config.get("SILK_AUTH_FAILURES_PER_MINUTE")
    if not limit:
        return
    db.session.close()
    address = client_address()
    limiter = current_app.extensions["silk.limiter"]
    if limiter.hit(f"authfail:{address}", limit, _FAILURE_WINDOW) > limit:
        left = _FAILURE_WINDOW - time.time() % _FAILURE_WINDOW
        key_cache().block(address, left)
        raise _too_many_failures(left)


def _too_many_failures(seconds: float) -> RateLimited:
    return RateLimited("Too many failed authentication attempts from this address; "
                       "try again later.", retry_after=int(seconds) + 1,
                       code="too_many_failed_authentications")


def _reject(message: str, **kw) -> AuthenticationFailed:
    count_failure()
    return AuthenticationFailed(message, **kw)


def authenticate() -> Principal:
    """Return the caller's principal or raise 401; caches both good and bad answers."""
    guard_address()
    secret = presented_key()
    if not secret:
        raise AuthenticationFailed(
            "Missing API key. Send 'Authorization: Bearer sk-...', an X-Api-Key header "
            "or the api_key query parameter.", code="missing_api_key")
    if len(secret) > _MAX_KEY_LENGTH:
        raise _reject("Invalid API key.")
    key_hash = hash_secret(secret)
    cache = key_cache()
    principal = cache.fetch(key_hash, _load, _lifetime)
    if principal is None:
        raise _reject("Invalid API key." + _also_sent(secret))
    if principal.expires_at is not None and principal.expires_at <= utcnow():
        raise _reject("This API key has expired." + _also_sent(secret),
                      code="expired_api_key")
    if cache.due_for_touch(principal.key_id):
        # A lock wait here must not stop the worker, nor the answer wait for the disk.
        with write_begin(db.engine, durable=False) as conn:
            conn.execute(update(ApiKey).where(ApiKey.id == principal.key_id)
                         .values(last_used_at=utcnow()))
    ctx = this_g()
    ctx.principal = principal
    ctx.account_id = principal.account_id
    return principal


def still_serving(key_hash: str) -> Principal | None:
    """The key's principal as this process knows it now (the key cache, reloaded once
    stale): None once the key is revoked or gone, or its account disabled."""
    return key_cache().fetch(key_hash, _load, _lifetime)


def why_refused(key_id: int) -> str:
    """Why a key that served no longer does, as an error code: `account_disabled`, else
    `key_revoked` (revoked, or gone)."""
    row = db.session.execute(
        select(ApiKey.revoked_at, Account.disabled)
        .join(Account, Account.id == ApiKey.account_id).where(ApiKey.id == key_id)).first()
    db.session.close()
    if row is not None and row.revoked_at is None and row.disabled:
        return "account_disabled"
    return "key_revoked"


def require_owner() -> Principal:
    """Return the caller's principal if it holds an owner key, else 403 (`owner_key_required`)."""
    principal = authenticate()
    if not principal.is_owner:
        raise PermissionDenied("This needs an owner key of the account: a member key uses "
                               "the API and sees only its own usage and caps.",
                               code="owner_key_required")
    return principal


def require_admin() -> Principal:
    """Return the caller's principal if it holds an admin key (an owner key of an admin
    account, without limits), else 403."""
    principal = authenticate()
    if not principal.is_admin or not principal.is_owner:
        raise PermissionDenied("This endpoint needs an admin key (an owner key of an admin "
                               "account, without limits).")
    limit = _limit_now(principal)
    if limit is not None:
        # An admin key may make any key: one with limits would make a wider key than itself.
        raise PermissionDenied(
            "This endpoint needs an admin key: an owner key of an admin account without "
            f"limits. This key has '{limit}', and an admin key can make any key, so it could "
            "make a wider key than itself. Use an owner key without models, expiry, rate "
            "limits or spend caps.", param=limit, code="key_scope_exceeded")
    return principal


def holds_admin_key(principal: Principal) -> bool:
    """Whether the caller's key is an admin key as require_admin says (its limits read now)."""
    return principal.is_admin and principal.is_owner and _limit_now(principal) is None


def _limit_now(principal: Principal) -> str | None:
    """The first limit of the caller's key, read now. The session then gives its connection
    back: a top-up or an operator credit writes on a connection of its own, and requests
    that each held two at once would empty the pool."""
    limit = admin_limit(acting_key(principal.key_id, principal.account_id))
    db.session.close()
    return limit
