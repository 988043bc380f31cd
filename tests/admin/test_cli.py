"""`flask silk ...` operator commands, run through Flask's CLI runner."""

from __future__ import annotations

import pytest

from silk.pricing import usd_to_units
from tests.support.usage import spend


def silk(runner, *args):
    return runner.invoke(args=["silk", *map(str, args)])


def test_accounts_list_show_disable_enable_and_tier(runner, accounts, client):
    user = accounts.make(email="cli@example.com", credit="30")
    listed = silk(runner, "list-accounts")
    assert listed.exit_code == 0
    assert f"{user.id}\tcli@example.com\ttier=free\tbalance=$30\tactive" in listed.output
    shown = silk(runner, "show-account", "cli@example.com")
    assert "balance: $30" in shown.output and "key " in shown.output
    assert user.key not in shown.output

    assert silk(runner, "disable-account", user.id).exit_code == 0
    assert client.get("/v1/balance", headers=user.headers).status_code == 401
    assert silk(runner, "enable-account", user.id).exit_code == 0
    assert client.get("/v1/balance", headers=user.headers).status_code == 200

    moved = silk(runner, "set-account-tier", user.id, "team")
    assert moved.exit_code == 0
    assert accounts.row(user.id).tier == "team"
    bad = silk(runner, "set-account-tier", user.id, "gold")
    assert bad.exit_code == 1 and "Unknown tier" in bad.output
    missing = silk(runner, "show-account", "nobody@example.com")
    assert missing.exit_code == 1 and "No account" in missing.output


def test_tiers_list_and_set(runner, accounts, client):
    listed = silk(runner, "list-tiers")
    assert "pro\tdiscount=10%\tfree_tokens=1000000" in listed.output
    saved = silk(runner, "set-tier", "vip", "--discount-percent", "25", "--free-tokens", "7")
    assert saved.exit_code == 0, saved.output
    assert "vip\tdiscount=25%\tfree_tokens=7" in silk(runner, "list-tiers").output
    user = accounts.make()
    silk(runner, "set-account-tier", user.id, "vip")
    assert client.get("/v1/billing", headers=user.headers).json["quota"]["free"] == 7
    assert silk(runner, "set-tier", "vip", "--discount-percent", "150",
                "--free-tokens", "1").exit_code == 1


def test_credit_refund_and_negative_adjustment(runner, accounts):
    user = accounts.make(credit="1")
    topped = silk(runner, "credit", user.id, "12.50", "--note", "wire 42")
    assert topped.exit_code == 0, topped.output
    assert "balance $13.5" in topped.output
    adjusted = silk(runner, "credit", "user1@example.com", "-3.5", "--kind", "adjustment",
                    "--note", "correction")
    assert adjusted.exit_code == 0, adjusted.output
    assert accounts.balance_units(user.id) == usd_to_units(10)
    entries = [(e.kind, e.amount_units, e.actor) for e in accounts.ledger(user.id)]
    assert entries[-2:] == [("topup", usd_to_units("12.5"), "cli"),
                            ("adjustment", -usd_to_units("3.5"), "cli")]
    for args in (("0",), ("-1",), ("1.001",), ("abc",), ("-20", "--kind", "adjustment")):
        result = silk(runner, "credit", user.id, *args)
        assert result.exit_code != 0, args
    assert accounts.balance_units(user.id) == usd_to_units(10)
    ledger = silk(runner, "ledger", user.id)
    assert "adjustment\t-$3.5\tbalance=$10" in ledger.output
    assert silk(runner, "audit").exit_code == 0


def test_redemption_codes_issued_on_the_cli_redeem_once(runner, accounts, client):
    issued = silk(runner, "issue-codes", "4.20", "--count", "2", "--note", "meetup")
    assert issued.exit_code == 0, issued.output
    codes = issued.output.strip().splitlines()[-2:]
    assert all(code.startswith("silk-rc-") for code in codes)
    user = accounts.make()
    assert client.post("/v1/topup", json={"code": codes[0]},
                       headers=user.headers).json["balance"] == 4.2
    listing = silk(runner, "list-codes").output
    assert codes[0] not in listing and "redeemed" in listing and "unused" in listing
    assert "$4.2" in silk(runner, "list-codes", "--state", "unused").output
    assert silk(runner, "issue-codes", "0").exit_code == 1
    assert silk(runner, "issue-codes", "1", "--count", "0").exit_code == 1


def test_invites_issued_on_the_cli_admit_sign_ups(runner, client):
    issued = silk(runner, "issue-invites", "--uses", "2", "--tier", "pro")
    assert issued.exit_code == 0, issued.output
    code = issued.output.strip().splitlines()[-1]
    response = client.post("/v1/register", json={"email": "inv@example.com",
                                                 "invite_code": code})
    assert response.status_code == 201 and response.json["tier"] == "pro"
    assert "uses_left=1\ttier=pro" in silk(runner, "list-invites").output
    assert silk(runner, "issue-invites", "--tier", "gold").exit_code == 1


def test_usage_report(app, runner, accounts):
    user = accounts.make(email="heavy@example.com", credit="1")
    spend(app, user.id, prompt=120, completion=80)
    report = silk(runner, "usage")
    assert report.exit_code == 0
    assert ("heavy@example.com\trequests=1\tfailed=0\tprompt=120\tcompletion=80\ttotal=200"
            in report.output)
    assert "deepseek-chat\trequests=1" in report.output
    assert silk(runner, "usage", "--month", "2020-01").output.count("requests=") == 0
    assert silk(runner, "usage", "--month", "2020-13").exit_code == 1


@pytest.mark.parametrize("command", ["list-accounts", "list-tiers", "list-codes", "list-invites",
                                     "usage", "audit"])
def test_commands_work_on_an_empty_database(runner, command):
    assert silk(runner, command).exit_code == 0
