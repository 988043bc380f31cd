"""Delivery: signed webhooks with retries and backoff, e-mail over SMTP, URL safety."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from datetime import timedelta

import pytest

from silk.alerts import signing
from tests.alerts.helpers import events
from tests.alerts.receiver import Receiver

ALLOW_LOOPBACK = {"SILK_ALERT_ALLOW_PRIVATE": True, "SILK_ALERT_RETRY_BASE": 10.0,
                  "SILK_ALERT_TIMEOUT": 5.0}


def _record(app, event_id: str, account_id: int | None, kind: str = "balance_low") -> None:
    from silk.alerts import outbox
    from silk.database import utcnow
    from silk.extensions import db

    with app.app_context(), db.engine.begin() as conn:
        outbox.record(conn, event_id, kind, account_id, {"balance_units": 5}, utcnow())


def _deliver(app) -> int:
    from silk.alerts.delivery import deliver_due
    from silk.extensions import db

    with app.app_context():
        return deliver_due(db.engine, app.config)


@pytest.fixture
def clock():
    """Move silk's clock forward by hand; the system clock again afterwards."""
    from silk.database import set_clock, utcnow

    now = [utcnow()]
    set_clock(lambda: now[0])
    yield now
    set_clock(None)


def test_signature_round_trip():
    header = signing.sign("whsec_x", b'{"a":1}', timestamp=1000)
    assert signing.verify("whsec_x", header, b'{"a":1}', now=1010)
    assert not signing.verify("whsec_y", header, b'{"a":1}', now=1010)
    assert not signing.verify("whsec_x", header, b'{"a":2}', now=1010)
    assert not signing.verify("whsec_x", header, b'{"a":1}', now=5000)  # too old
    assert not signing.verify("whsec_x", "garbage", b'{"a":1}', now=1010)


def test_private_webhook_refused_by_default(client, accounts):
    acct = accounts.make()
    for url in ("http://127.0.0.1:9/hook", "http://10.1.2.3/hook", "http://[::1]/x",
                "http://169.254.169.254/latest", "ftp://example.com/x", "not a url"):
        answer = client.put("/v1/account/alerts", json={"webhook_url": url},
                            headers=acct.headers)
        assert answer.status_code == 400, url
        assert answer.json["error"]["param"] == "webhook_url"
    answer = client.put("/v1/account/alerts", json={"email": "nope"}, headers=acct.headers)
    assert answer.status_code == 400 and answer.json["error"]["param"] == "email"
    answer = client.put("/v1/account/alerts", json={"balance_threshold": -1},
                        headers=acct.headers)
    assert answer.status_code == 400
    assert client.put("/v1/account/alerts", json={}).status_code == 401


_GETADDRINFO = socket.getaddrinfo


def _rebinding_dns(monkeypatch, answers: dict[str, list[str]]) -> None:
    """A name server whose first answer for hooks.example is public and later ones are
    loopback; the public addresses themselves lead to other loopback addresses here."""
    real = _GETADDRINFO
    looked_up = []

    def getaddrinfo(host, port, *args, **kwargs):
        if host == "hooks.example":
            looked_up.append(host)
            names = answers["first"] if len(looked_up) == 1 else ["127.0.0.1"]
            return [info for name in names for info in real(name, port, *args, **kwargs)]
        return real(answers.get(host, [host])[0], port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_a_webhook_goes_to_the_address_that_was_checked(monkeypatch):
    """DNS rebinding: the host passes the check as public, then resolves to loopback; the
    event still goes only to the checked address, with the URL's host name as Host."""
    from silk.alerts.delivery import post_webhook

    with Receiver("whsec_test", host="127.0.0.2") as checked, \
            Receiver("whsec_test", host="127.0.0.1", port=checked.port) as internal:
        _rebinding_dns(monkeypatch, {"first": ["93.184.216.34"],
                                     "93.184.216.34": ["127.0.0.2"]})
        body = json.dumps({"id": "evt_pinned"}).encode()
        post_webhook(f"http://hooks.example:{checked.port}/hook", "whsec_test", body,
                     "evt_pinned", allow_private=False, timeout=5)
        assert [e["id"] for e in checked.deliveries] == ["evt_pinned"]
        assert checked.hosts == [f"hooks.example:{checked.port}"]
        assert internal.deliveries == []


def test_a_pinned_https_webhook_checks_the_certificate_of_the_urls_host(monkeypatch, tmp_path):
    """Over TLS the checked address is reached with the URL's host name for SNI and the
    certificate; a certificate for another name is refused."""
    import trustme

    from silk.alerts.delivery import Undelivered, post_webhook

    ca = trustme.CA()
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    for name, delivered in (("hooks.example", True), ("other.example", False)):
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(name).configure_cert(context)
        with Receiver("whsec_test", host="127.0.0.2", tls=context) as checked:
            _rebinding_dns(monkeypatch, {"first": ["93.184.216.34"],
                                         "93.184.216.34": ["127.0.0.2"]})
            body = json.dumps({"id": f"evt_{name}"}).encode()
            url = f"https://hooks.example:{checked.port}/hook"
            if delivered:
                post_webhook(url, "whsec_test", body, "x", allow_private=False, timeout=5)
            else:
                with pytest.raises(Undelivered, match="SSLError"):
                    post_webhook(url, "whsec_test", body, "x", allow_private=False, timeout=5)
            assert [e["id"] for e in checked.deliveries] == ([f"evt_{name}"] if delivered
                                                             else [])


def test_a_webhook_tries_the_next_checked_address_when_one_refuses(monkeypatch):
    from silk.alerts.delivery import post_webhook

    with Receiver("whsec_test", host="127.0.0.2") as checked, \
            Receiver("whsec_test", host="127.0.0.1", port=checked.port) as internal:
        _rebinding_dns(monkeypatch, {"first": ["93.184.216.34", "93.184.216.35"],
                                     "93.184.216.34": ["127.0.0.3"],  # nothing listens
                                     "93.184.216.35": ["127.0.0.2"]})
        body = json.dumps({"id": "evt_second"}).encode()
        post_webhook(f"http://hooks.example:{checked.port}/hook", "whsec_test", body,
                     "evt_second", allow_private=False, timeout=5)
        assert [e["id"] for e in checked.deliveries] == ["evt_second"]
        assert internal.deliveries == []


def test_a_webhook_that_redirects_inward_is_not_followed(monkeypatch):
    """A checked public receiver that answers 307 to a loopback address: the redirect is a
    failed delivery (retried later), never a POST to the address it names."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from silk.alerts.delivery import Undelivered, post_webhook

    with Receiver("whsec_test", host="127.0.0.1") as internal:
        class Redirect(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(307)
                self.send_header("Location", f"http://127.0.0.1:{internal.port}/hook")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.2", 0), Redirect)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            _rebinding_dns(monkeypatch, {"first": ["93.184.216.34"],
                                         "93.184.216.34": ["127.0.0.2"]})
            body = json.dumps({"id": "evt_redirect"}).encode()
            with pytest.raises(Undelivered, match="307"):
                post_webhook(f"http://hooks.example:{server.server_port}/hook", "whsec_test",
                             body, "evt_redirect", allow_private=False, timeout=5)
        finally:
            server.shutdown()
            server.server_close()
        assert internal.deliveries == []


@pytest.mark.parametrize("app_config", [ALLOW_LOOPBACK])
def test_webhook_retries_with_backoff_until_delivered(app, client, accounts, clock):
    acct = accounts.make()
    with Receiver() as receiver:
        answer = client.put("/v1/account/alerts", json={"webhook_url": receiver.url},
                            headers=acct.headers)
        assert answer.status_code == 200
        receiver.secret = answer.json["webhook_secret"]  # shown this once
        assert receiver.secret.startswith("whsec_")
        shown = client.get("/v1/account/alerts", headers=acct.headers).json
        assert shown["webhook_url"] == receiver.url and "webhook_secret" not in shown

        _record(app, "balance_low:1", acct.id)
        receiver.fail = 2
        _deliver(app)
        (row,) = events(app)
        assert (row.state, row.attempts) == ("pending", 1)
        first_wait = (row.next_attempt_at - clock[0]).total_seconds()
        assert 10 <= first_wait <= 12
        assert _deliver(app) == 0  # not due yet: nothing is sent
        assert len(receiver.deliveries) == 1

        clock[0] += timedelta(seconds=first_wait + 1)
        _deliver(app)
        (row,) = events(app)
        assert (row.state, row.attempts) == ("pending", 2)
        second_wait = (row.next_attempt_at - clock[0]).total_seconds()
        assert 20 <= second_wait <= 24  # doubled

        clock[0] += timedelta(seconds=second_wait + 1)
        _deliver(app)
        (row,) = events(app)
        assert (row.state, row.attempts) == ("delivered", 3)
        clock[0] += timedelta(hours=2)
        _deliver(app)  # delivered events are never sent again
    assert receiver.counts() == {"balance_low:1": 3}
    assert receiver.bad_signatures == 0
    body = receiver.accepted["balance_low:1"]
    assert body["type"] == "balance_low"
    assert body["account"]["id"] == acct.id
    assert body["data"]["balance_usd"] == "0.000000005"


@pytest.mark.parametrize("app_config", [{**ALLOW_LOOPBACK, "SILK_ALERT_MAX_ATTEMPTS": 2}])
def test_delivery_gives_up_after_max_attempts(app, client, accounts, clock):
    acct = accounts.make()
    with Receiver() as receiver:
        answer = client.put("/v1/account/alerts", json={"webhook_url": receiver.url},
                            headers=acct.headers)
        receiver.secret = answer.json["webhook_secret"]
        receiver.fail = 10
        _record(app, "balance_low:2", acct.id)
        _deliver(app)
        clock[0] += timedelta(minutes=5)
        _deliver(app)
        (row,) = events(app)
        assert (row.state, row.attempts) == ("failed", 2)
        assert "500" in row.last_error


@pytest.fixture
def smtp_server():
    """A real SMTP server on loopback (aiosmtpd) keeping what it receives."""
    from aiosmtpd.controller import Controller

    from tests.support.gateway import free_port

    class Keep:
        def __init__(self):
            self.messages = []
            self.arrived = threading.Event()

        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
            self.messages.append(envelope)
            self.arrived.set()
            return "250 OK"

    handler = Keep()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, handler
    controller.stop()


def test_email_to_the_account_and_the_operator(app, client, accounts, smtp_server):
    from email import message_from_bytes

    controller, handler = smtp_server
    app.config.update(SILK_SMTP_HOST="127.0.0.1", SILK_SMTP_PORT=controller.port,
                      SILK_SMTP_SECURITY="none", SILK_SMTP_FROM="alerts@gateway.test",
                      SILK_ALERT_EMAIL="ops@gateway.test")
    acct = accounts.make()
    answer = client.put("/v1/account/alerts", json={"email": "owner@example.com"},
                        headers=acct.headers)
    assert answer.status_code == 200 and answer.json["email"] == "owner@example.com"
    _record(app, "quota_used_up:7:2026-12", acct.id, kind="quota_used_up")
    _record(app, "route_failing:x:1", None, kind="route_failing")  # the operator's only
    _deliver(app)
    assert [row.state for row in events(app)] == ["delivered", "delivered"]
    received = [(env.rcpt_tos, message_from_bytes(env.content)) for env in handler.messages]
    assert sorted((tuple(to), msg["Silk-Event-Id"]) for to, msg in received) == [
        (("ops@gateway.test",), "quota_used_up:7:2026-12"),
        (("ops@gateway.test",), "route_failing:x:1"),
        (("owner@example.com",), "quota_used_up:7:2026-12")]
    message = received[0][1]
    assert message["From"] == "alerts@gateway.test"
    assert "[SilkGateway]" in message["Subject"]
    text = message.get_payload(decode=True).decode().replace("\r\n", "\n")
    assert json.loads(text.split("\n\n", 1)[1])["id"] == message["Silk-Event-Id"]


def test_smtp_down_is_retried(app, accounts, client):
    from tests.support.gateway import free_port

    app.config.update(SILK_SMTP_HOST="127.0.0.1", SILK_SMTP_PORT=free_port(),
                      SILK_SMTP_SECURITY="none", SILK_ALERT_EMAIL="ops@gateway.test")
    _record(app, "route_failing:y:1", None, kind="route_failing")
    _deliver(app)
    (row,) = events(app)
    assert (row.state, row.attempts) == ("pending", 1)
    assert "e-mail" in row.last_error


def test_readme_verification_snippet_verifies_our_signatures():
    """The README's receiver snippet accepts what the gateway signs, and nothing else."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index("def verify(secret: str, header: str, body: bytes")
    snippet = readme[readme.rindex("```python", 0, start) + len("```python"):
                     readme.index("```", start)]
    namespace: dict = {}
    exec(snippet, namespace)  # noqa: S102 - the project's own documentation
    header = signing.sign("whsec_readme", b'{"id":"e1"}')
    assert namespace["verify"]("whsec_readme", header, b'{"id":"e1"}')
    assert not namespace["verify"]("whsec_other", header, b'{"id":"e1"}')
    assert not namespace["verify"]("whsec_readme", header, b'{"id":"e2"}')


def test_a_forged_signature_with_non_ascii_is_refused_not_an_error():
    """hmac.compare_digest raises TypeError on a str with non-ASCII characters: a forged
    header must be refused by the receiver's check (ours and the README's), not crash it."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index("def verify(secret: str, header: str, body: bytes")
    namespace: dict = {}
    exec(readme[readme.rindex("```python", 0, start) + len("```python"):  # noqa: S102
                readme.index("```", start)], namespace)
    stamp = signing.sign("whsec_x", b"{}").split(",")[0]
    for verify in (signing.verify, namespace["verify"]):
        assert not verify("whsec_x", f"{stamp},v1=\u00e9", b"{}")


@pytest.mark.parametrize("app_config", [{**ALLOW_LOOPBACK, "SILK_ALERT_KEY_EXPIRY_DAYS": 7}])
def test_operator_commands(app, runner, accounts):
    from silk.account.service import create_key
    from silk.database import utcnow

    acct = accounts.make()
    with app.app_context():
        create_key(acct.id, name="soon", expires_at=utcnow() + timedelta(days=2))
    result = runner.invoke(args=["silk", "sweep"])
    assert result.exit_code == 0 and "recorded 1 key-expiry alert(s)" in result.output
    result = runner.invoke(args=["silk", "alerts"])
    assert result.exit_code == 0 and "pending: 1" in result.output
    with Receiver(secret="whsec_op") as receiver:
        app.config.update(SILK_ALERT_WEBHOOK_URL=receiver.url,
                          SILK_ALERT_WEBHOOK_SECRET="whsec_op")
        result = runner.invoke(args=["silk", "alerts", "--deliver"])
    assert "delivered 1 event(s)" in result.output and "delivered: 1" in result.output
    assert [event["type"] for event in receiver.accepted.values()] == ["key_expiring"]


def test_an_alert_address_that_cannot_be_a_header_is_refused(client, accounts):
    """A quoted local part may hold control characters the e-mail validator lets through;
    a vertical tab or form feed reads as a line break to Python's e-mail headers."""
    acct = accounts.make()
    for bad in ('"a\x0bb"@example.com', '"a\x0cb"@example.com', '"a\x01b"@example.com'):
        answer = client.put("/v1/account/alerts", json={"email": bad}, headers=acct.headers)
        assert answer.status_code == 400, bad
        assert answer.json["error"]["param"] == "email"
    assert client.get("/v1/account/alerts", headers=acct.headers).json["email"] is None


@pytest.mark.parametrize("app_config", [{**ALLOW_LOOPBACK, "SILK_ALERT_MAX_ATTEMPTS": 2}])
def test_an_address_no_message_can_carry_fails_only_its_own_recipient(app, accounts, clock,
                                                                       smtp_server):
    """An address stored before it was refused (a vertical tab in a quoted local part) is an
    undelivered recipient: the round is recorded, the others get the event once, and it
    fails after the last attempt instead of being claimed and sent again forever."""
    from sqlalchemy import update

    from silk.account.models import Account
    from silk.extensions import db

    controller, _ = smtp_server
    acct = accounts.make()
    with app.app_context():
        db.session.execute(update(Account).where(Account.id == acct.id).values(
            alert_email='"a\x0bb"@example.com'))
        db.session.commit()
    with Receiver("whsec_operator") as receiver:
        app.config.update(SILK_SMTP_HOST="127.0.0.1", SILK_SMTP_PORT=controller.port,
                          SILK_SMTP_SECURITY="none", SILK_ALERT_WEBHOOK_URL=receiver.url,
                          SILK_ALERT_WEBHOOK_SECRET="whsec_operator")
        _record(app, "balance_low:3", acct.id)
        for _ in range(3):
            _deliver(app)
            clock[0] += timedelta(hours=2)  # past the retry and any lease
        (row,) = events(app)
        assert (row.state, row.attempts) == ("failed", 2)
        assert json.loads(row.pending) == ["account:email"]
        assert "account:email: e-mail" in row.last_error
        assert receiver.counts() == {"balance_low:3": 1}


class _EndlessAnswer:
    """A loopback receiver that answers 200 and then sends a chunked body for `seconds`
    (or until the sender hangs up); how many bytes it got out."""

    def __init__(self, host: str, seconds: float) -> None:
        self.listener = socket.create_server((host, 0))
        self.port = self.listener.getsockname()[1]
        self.seconds = seconds
        self.sent = 0
        self.done = threading.Event()

    def serve(self) -> None:
        import time

        conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(self.seconds)
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
            deadline = time.monotonic() + self.seconds
            try:
                while time.monotonic() < deadline:
                    conn.sendall(chunk)
                    self.sent += len(chunk)
                conn.sendall(b"0\r\n\r\n")
            except OSError:
                pass  # the sender closed the connection
        self.done.set()

    def __enter__(self) -> _EndlessAnswer:
        threading.Thread(target=self.serve, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.listener.close()


@pytest.mark.parametrize("pinned", [True, False])
def test_a_webhooks_answer_body_is_not_read(monkeypatch, pinned):
    """Only the status matters: a receiver that answers 200 with an endless body neither
    holds the delivery (and the event's lease) nor fills the worker's memory with it."""
    import time

    from silk.alerts.delivery import post_webhook

    with _EndlessAnswer("127.0.0.2", seconds=20) as receiver:
        if pinned:
            _rebinding_dns(monkeypatch, {"first": ["93.184.216.34"],
                                         "93.184.216.34": ["127.0.0.2"]})
            url = f"http://hooks.example:{receiver.port}/hook"
        else:
            url = f"http://127.0.0.2:{receiver.port}/hook"
        started = time.monotonic()
        post_webhook(url, "whsec_test", b'{"id":"evt_endless"}', "evt_endless",
                     allow_private=not pinned, timeout=5)
        assert time.monotonic() - started < 5
        assert receiver.done.wait(10)  # it saw the connection close
        assert receiver.sent < 64 * 2**20  # what socket buffers hold, not 20 s of it


@pytest.mark.parametrize("app_config", [{**ALLOW_LOOPBACK, "SILK_ALERT_RETENTION_DAYS": 30,
                                         "SILK_ALERT_MAX_ATTEMPTS": 1}])
def test_old_finished_events_go_and_pending_and_recent_ones_stay(app, client, accounts,
                                                                 clock):
    """Each delivery round deletes delivered and given-up events past the retention."""
    from tests.support.gateway import free_port

    acct = accounts.make()
    dead = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens: every delivery fails
    assert client.put("/v1/account/alerts", json={"webhook_url": dead},
                      headers=acct.headers).status_code == 200
    _record(app, "old-delivered", None)  # nobody to tell: delivered at once
    _record(app, "old-failed", acct.id)  # one attempt allowed: given up at once
    _deliver(app)
    app.config["SILK_ALERT_MAX_ATTEMPTS"] = 1000
    _record(app, "old-pending", acct.id)  # retried for ever
    _deliver(app)
    assert {e.event_id: e.state for e in events(app)} == {
        "old-delivered": "delivered", "old-failed": "failed", "old-pending": "pending"}

    clock[0] += timedelta(days=29)
    _record(app, "recent-delivered", None)
    _deliver(app)
    assert len(events(app)) == 4  # nothing is 30 days old yet

    clock[0] += timedelta(days=2)
    _deliver(app)
    assert {e.event_id: e.state for e in events(app)} == {
        "old-pending": "pending", "recent-delivered": "delivered"}



@pytest.mark.parametrize("app_config", [{"SILK_ALERT_RETENTION_DAYS": 1,
                                         "SILK_ALERT_KEY_EXPIRY_DAYS": 7}])
def test_retention_keeps_an_event_while_its_cause_could_write_it_again(app, clock):
    """A key's expiry alert is written by each sweep while the key expires within
    SILK_ALERT_KEY_EXPIRY_DAYS: deleted before that, it would be sent again."""
    _record(app, "key_expiring:1:20300101T000000", None, kind="key_expiring")
    _deliver(app)
    clock[0] += timedelta(days=3)
    _deliver(app)
    assert [e.event_id for e in events(app)] == ["key_expiring:1:20300101T000000"]
    clock[0] += timedelta(days=5)
    _deliver(app)
    assert events(app) == []



def test_a_pass_deletes_a_bounded_batch(app, clock):
    from silk.alerts import outbox
    from silk.extensions import db

    for n in range(5):
        _record(app, f"e{n}", None)
    _deliver(app)
    with app.app_context():
        later = clock[0] + timedelta(seconds=1)
        assert outbox.prune(db.engine, later, limit=2) == 2
        assert outbox.prune(db.engine, clock[0] - timedelta(seconds=1), limit=2) == 0
    assert len(events(app)) == 3
