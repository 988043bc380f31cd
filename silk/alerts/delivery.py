"""Deliver the outbox: each worker claims due events, posts and mails them, retries later.

Never on a request's path: a greenlet per worker (started by gunicorn's post_worker_init)
runs `deliver_due` every SILK_ALERT_INTERVAL seconds. Delivery is at least once: an
event whose worker died mid-delivery is delivered again once its lease ends, with the
same `id`, which receivers use to drop repeats.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import smtplib
import ssl
from collections.abc import Iterator, Mapping
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

import requests
import urllib3
from flask import Flask
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from silk.alerts import outbox, signing
from silk.alerts.safety import UnsafeUrl, check_url
from silk.database import utcnow
from silk.metering.worker import identity
from silk.pricing import units_to_usd
from silk.sockets import cooperative

log = logging.getLogger("silk.alerts")

_MOST_BACKOFF = 3600.0  # seconds between two attempts at most

SUBJECTS = {
    "balance_low": "Balance under its alert threshold",
    "quota_used_up": "Monthly free quota used up",
    "key_expiring": "An API key expires soon",
    "route_failing": "A model route is failing",
    "key_spend": "A key's spend reached a share of its cap",
}


class Undelivered(Exception):
    """One recipient could not be reached this time; the event is tried again later."""


@contextlib.contextmanager
def _deadline(seconds: float, what: str) -> Iterator[None]:
    """Undelivered once `seconds` pass, in a gevent worker: each read's timeout alone lets a
    receiver that answers a byte at a time hold the delivery, past the event's lease."""
    if not cooperative():
        yield
        return
    import gevent

    timer = gevent.Timeout(seconds)
    timer.start()
    try:
        yield
    except gevent.Timeout as exc:
        if exc is not timer:
            raise
        raise Undelivered(f"{what}: no answer within {seconds:g} s") from None
    finally:
        timer.close()


def recipients_of(account: Mapping[str, Any] | None, config: Mapping[str, Any]) -> list[str]:
    """Who an event goes to: the account's webhook and address, then the operator's."""
    chosen = []
    if account is not None:
        if account.get("alert_webhook_url"):
            chosen.append("account:webhook")
        if account.get("alert_email"):
            chosen.append("account:email")
    if config.get("SILK_ALERT_WEBHOOK_URL"):
        chosen.append("operator:webhook")
    if config.get("SILK_ALERT_EMAIL"):
        chosen.append("operator:email")
    return chosen


def body_of(event: outbox.Claimed, account: Mapping[str, Any] | None) -> dict[str, Any]:
    """The JSON an event is delivered as (the e-mail carries it too)."""
    data = dict(event.payload)
    for name, value in event.payload.items():
        if name.endswith("_units") and isinstance(value, int):
            data[name[:-len("_units")] + "_usd"] = f"{units_to_usd(value):f}"
    return {"id": event.event_id, "type": event.kind,
            "created_at": event.created_at.isoformat() + "Z",
            "account": ({"id": account["id"], "email": account["email"]}
                        if account is not None else None),
            "data": data}


def post_webhook(url: str, secret: str, body: bytes, event_id: str, *,
                 allow_private: bool, timeout: float) -> None:
    """POST a signed event; raise Undelivered unless the receiver answers 2xx within
    `timeout` seconds in all.

    Unless private addresses are allowed, the POST goes to an address the URL's check
    approved (the next one if a connection cannot be made), with the URL's host name for
    Host, SNI and the certificate.
    """
    with _deadline(timeout, "webhook"):
        _post_webhook(url, secret, body, event_id, allow_private=allow_private,
                      timeout=timeout)


def _post_webhook(url: str, secret: str, body: bytes, event_id: str, *,
                  allow_private: bool, timeout: float) -> None:
    try:
        addresses = check_url(url, allow_private=allow_private)
    except UnsafeUrl as exc:
        raise Undelivered(str(exc)) from None
    headers = {"Content-Type": "application/json", "User-Agent": "SilkGateway-Alerts",
               "Silk-Event-Id": event_id, signing.HEADER: signing.sign(secret, body)}
    if not addresses:
        try:
            with requests.post(url, data=body, headers=headers, timeout=timeout,
                               allow_redirects=False, stream=True) as answer:
                status = answer.status_code  # the body is never read (see _post_pinned)
        except requests.RequestException as exc:
            raise Undelivered(f"webhook: {type(exc).__name__}") from None
    else:
        status = _post_pinned(url, addresses, body, headers, timeout)
    if not 200 <= status < 300:
        raise Undelivered(f"webhook answered {status}")


def _trusted() -> str:
    """The certificate bundle requests would verify with (its environment variables too)."""
    return (os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            or requests.certs.where())


def _post_pinned(url: str, addresses: list[str], body: bytes, headers: dict[str, str],
                 timeout: float) -> int:
    """POST to the first of `addresses` that takes a connection; the answer's status."""
    parsed = urllib3.util.parse_url(url)
    https = parsed.scheme == "https"
    port = parsed.port or (443 if https else 80)
    host = parsed.host or ""
    headers = {**headers, "Host": host if parsed.port is None else f"{host}:{parsed.port}"}
    failure: Exception | None = None
    for address in addresses:
        options: dict[str, Any] = {"port": port, "maxsize": 1, "retries": False,
                                   "timeout": urllib3.Timeout(connect=timeout, read=timeout)}
        if https:
            pool: urllib3.HTTPConnectionPool = urllib3.HTTPSConnectionPool(
                address, **options, server_hostname=host.strip("[]"),
                assert_hostname=host.strip("[]"), cert_reqs="CERT_REQUIRED",
                ca_certs=_trusted())
        else:
            pool = urllib3.HTTPConnectionPool(address, **options)
        try:
            with pool:
                # Only the status counts: the body is left unread, so a receiver that
                # answers with an endless one holds neither the delivery nor memory.
                answer = pool.urlopen("POST", parsed.request_uri, body=body,
                                      headers=headers, redirect=False, retries=False,
                                      preload_content=False)
                answer.close()
                return answer.status
        except urllib3.exceptions.NewConnectionError as exc:
            failure = exc  # this address takes no connection: the next one may
        except urllib3.exceptions.HTTPError as exc:
            raise Undelivered(f"webhook: {type(exc).__name__}") from None
    raise Undelivered(f"webhook: {type(failure).__name__}")


def _message(config: Mapping[str, Any], to: str, subject: str,
             body: dict[str, Any]) -> EmailMessage:
    """The e-mail of an event; ValueError for a header value with a line break in it."""
    message = EmailMessage()
    message["From"] = config.get("SILK_SMTP_FROM") or "silkgateway@localhost"
    message["To"] = to
    message["Subject"] = f"[SilkGateway] {subject}"
    message["Message-ID"] = f"<{body['id']}@silkgateway>"
    message["Silk-Event-Id"] = body["id"]
    message.set_content(f"{subject}.\n\n{json.dumps(body, indent=2)}\n")
    return message


def send_email(config: Mapping[str, Any], to: str, subject: str, body: dict[str, Any]) -> None:
    """Send an event by e-mail through the configured SMTP server (smtplib), within
    SILK_ALERT_TIMEOUT seconds in all."""
    with _deadline(float(config["SILK_ALERT_TIMEOUT"]), "e-mail"):
        _send_email(config, to, subject, body)


def _send_email(config: Mapping[str, Any], to: str, subject: str,
                body: dict[str, Any]) -> None:
    host = config.get("SILK_SMTP_HOST")
    if not host:
        raise Undelivered("e-mail: SILK_SMTP_HOST is not set")
    try:
        message = _message(config, to, subject, body)
    except ValueError:  # an address stored before such were refused: no header holds it
        raise Undelivered("e-mail: the address cannot be a header") from None
    port, timeout = int(config["SILK_SMTP_PORT"]), float(config["SILK_ALERT_TIMEOUT"])
    security = config.get("SILK_SMTP_SECURITY", "starttls")
    try:
        smtp: smtplib.SMTP
        if security == "ssl":
            smtp = smtplib.SMTP_SSL(host, port, timeout=timeout,
                                    context=ssl.create_default_context())
        else:
            smtp = smtplib.SMTP(host, port, timeout=timeout)
        try:  # not `with smtp`: its QUIT after a cut-off delivery would wait again
            if security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
            if config.get("SILK_SMTP_USER"):
                smtp.login(config["SILK_SMTP_USER"], config.get("SILK_SMTP_PASSWORD") or "")
            smtp.send_message(message)
            with contextlib.suppress(OSError, smtplib.SMTPException):  # it is sent
                smtp.quit()
        finally:
            smtp.close()
    except (OSError, smtplib.SMTPException) as exc:
        raise Undelivered(f"e-mail: {type(exc).__name__}") from None


def _account(engine: Engine, account_id: int | None) -> dict[str, Any] | None:
    if account_id is None:
        return None
    with engine.connect() as conn:
        row = conn.execute(text(
            "SELECT id, email, alert_webhook_url, alert_webhook_secret, alert_email "
            "FROM accounts WHERE id = :id"), {"id": account_id}).mappings().first()
    return dict(row) if row else None


def _send(recipient: str, event: outbox.Claimed, account: dict[str, Any] | None,
          config: Mapping[str, Any]) -> None:
    """Deliver to one recipient; one that is no longer configured counts as done."""
    body = body_of(event, account)
    who, how = recipient.split(":", 1)
    settings: Mapping[str, Any] | None = account if who == "account" else {
        "alert_webhook_url": config.get("SILK_ALERT_WEBHOOK_URL"),
        "alert_webhook_secret": config.get("SILK_ALERT_WEBHOOK_SECRET"),
        "alert_email": config.get("SILK_ALERT_EMAIL")}
    if settings is None:
        return
    if how == "webhook" and settings.get("alert_webhook_url"):
        post_webhook(settings["alert_webhook_url"], settings.get("alert_webhook_secret") or "",
                     json.dumps(body).encode(), event.event_id,
                     allow_private=bool(config.get("SILK_ALERT_ALLOW_PRIVATE")),
                     timeout=float(config["SILK_ALERT_TIMEOUT"]))
    elif how == "email" and settings.get("alert_email"):
        send_email(config, settings["alert_email"], SUBJECTS.get(event.kind, event.kind), body)


def backoff(config: Mapping[str, Any], attempts: int) -> float:
    """Seconds before the next attempt after `attempts` failed ones (with jitter)."""
    base = float(config["SILK_ALERT_RETRY_BASE"]) * 2 ** max(attempts - 1, 0)
    return min(base, _MOST_BACKOFF) * random.uniform(1.0, 1.2)


_MOST_PER_ROUND = 100  # events one worker delivers in a round; the rest wait for the next
_PRUNED_PER_ROUND = 500  # finished events one worker deletes in a round (one transaction)


def deliver_due(engine: Engine, config: Mapping[str, Any]) -> int:
    """Claim and deliver this worker's share of due events, then delete a batch of events
    finished long ago (`_kept_days`); how many were finished.

    Events are claimed a few at a time, as many as can surely be sent within one lease
    (each recipient may take SILK_ALERT_TIMEOUT), so a slow receiver does not let the
    lease of an event still waiting its turn run out and another worker send it too.
    """
    lease, timeout = float(config["SILK_ALERT_LEASE"]), float(config["SILK_ALERT_TIMEOUT"])
    per_claim = max(1, int(lease // max(4 * timeout, 1)))
    worker, done, seen = identity(), 0, 0
    while seen < _MOST_PER_ROUND:
        batch = outbox.claim(engine, worker, utcnow(), lease, limit=per_claim)
        if not batch:
            break
        seen += len(batch)
        done += sum(_deliver(engine, event, worker, config) for event in batch)
    outbox.prune(engine, utcnow() - timedelta(days=_kept_days(config)), _PRUNED_PER_ROUND)
    return done


def _kept_days(config: Mapping[str, Any]) -> float:
    """Days a delivered or given-up event is kept: SILK_ALERT_RETENTION_DAYS, but never less
    than SILK_ALERT_KEY_EXPIRY_DAYS, while the sweep would write a key's expiry event again
    (its id is how it is written once)."""
    return max(float(config["SILK_ALERT_RETENTION_DAYS"]),
               float(config["SILK_ALERT_KEY_EXPIRY_DAYS"]))


def _deliver(engine: Engine, event: outbox.Claimed, worker: str,
             config: Mapping[str, Any]) -> bool:
    """Send one claimed event to each recipient still pending; record the round."""
    account = _account(engine, event.account_id)
    recipients = (event.recipients if event.recipients is not None
                  else recipients_of(account, config))
    pending = list(recipients if event.pending is None else event.pending)
    errors = []
    for recipient in list(pending):
        try:
            _send(recipient, event, account, config)
        except Undelivered as exc:
            errors.append(f"{recipient}: {exc}")
            continue
        pending.remove(recipient)
    attempts = event.attempts + 1
    retry = (backoff(config, attempts)
             if attempts < int(config["SILK_ALERT_MAX_ATTEMPTS"]) else None)
    if pending:
        log.warning("alert not delivered", extra={"fields": {
            "event": event.event_id, "attempts": attempts, "errors": "; ".join(errors)}})
    return outbox.finish(engine, event, worker, recipients=recipients, pending=pending,
                         now=utcnow(), retry_after=retry, error="; ".join(errors))


def start_delivery(app: Flask) -> None:
    """Spawn this worker's delivery greenlet, unless SILK_ALERT_INTERVAL is 0."""
    import gevent

    from silk.extensions import db
    from silk.ops import schema

    interval = float(app.config["SILK_ALERT_INTERVAL"])
    if interval <= 0:
        return

    def run() -> None:
        gevent.sleep(random.uniform(0, interval))  # workers do not all claim at once
        while True:
            try:
                with app.app_context():
                    if schema.problem() is None:  # no outbox before `db upgrade`
                        deliver_due(db.engine, app.config)
            except DBAPIError as exc:  # the database is away: the events wait for it
                log.warning("alert delivery postponed: %s", type(exc.orig).__name__)
            except Exception:  # noqa: BLE001 - a failed round is tried again next round
                log.exception("alert delivery failed")
            gevent.sleep(interval)

    gevent.spawn(run)
