"""Webhook URLs holding control characters or spaces: urlparse drops a tab, CR or LF
before it checks the host, but the URL is stored and later posted to as written, where
urllib3 cannot parse it (and PostgreSQL cannot store a NUL). Refused when set; one stored
before that fails only its own recipient instead of ending every delivery round."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from tests.alerts.helpers import events
from tests.alerts.test_delivery import _deliver, _record, clock  # noqa: F401 - a fixture


@pytest.mark.parametrize("url", [
    "http://8.8.8.8\r\n/hook",          # urlparse drops the CR LF, urllib3 refuses the host
    "http://8.8.8.8\t:8080/hook",       # a tab before the port
    "http://8.8.8.8/a\r\nX-Injected: 1",
    "http://8.8.8.8/a b",
    "http://8.8.8.8/a\x00b",            # PostgreSQL's text cannot hold it
    "http://8.8.8.8/a\x7fb",
])
def test_a_webhook_url_with_a_control_character_or_space_is_a_400(client, accounts, url):
    acct = accounts.make()
    answer = client.put("/v1/account/alerts", json={"webhook_url": url}, headers=acct.headers)
    assert answer.status_code == 400, (url, answer.json)
    assert answer.json["error"]["param"] == "webhook_url"
    assert client.get("/v1/account/alerts", headers=acct.headers).json["webhook_url"] is None


@pytest.mark.parametrize("app_config", [{"SILK_ALERT_MAX_ATTEMPTS": 2,
                                         "SILK_ALERT_RETRY_BASE": 10.0}])
def test_a_stored_webhook_url_urllib3_cannot_parse_fails_only_its_event(app, accounts,
                                                                        clock):  # noqa: F811
    """A URL set before such were refused is an undelivered recipient: the round goes on
    to the next event, and the event fails after its last attempt instead of ending each
    round it is claimed in and being claimed again forever."""
    from sqlalchemy import update

    from silk.account.models import Account
    from silk.extensions import db

    acct = accounts.make()
    with app.app_context():
        db.session.execute(update(Account).where(Account.id == acct.id).values(
            alert_webhook_url="http://8.8.8.8\r\n/hook", alert_webhook_secret="whsec_x"))
        db.session.commit()
    _record(app, "balance_low:1", acct.id)
    for _ in range(3):
        _deliver(app)
        clock[0] += timedelta(hours=2)  # past the retry and any lease
    (row,) = events(app)
    assert (row.state, row.attempts) == ("failed", 2)
    assert json.loads(row.pending) == ["account:webhook"]
    assert "account:webhook" in row.last_error
