"""The `flask silk` commands: accounts, keys, audit, sweep."""

import socket
import subprocess
from datetime import timedelta

from sqlalchemy import text

from silk.database import utcnow
from tests.chat.helpers import set_quota_left


def test_create_account_prints_the_key_last(runner, client):
    result = runner.invoke(args=["silk", "create-account", "Ops@Example.com", "--tier", "team",
                                 "--credit", "12.5", "--admin"])
    assert result.exit_code == 0, result.output
    key = result.output.strip().splitlines()[-1]
    assert key.startswith("sk-") and " " not in key
    assert client.get("/v1/balance", headers={"X-Api-Key": key}).json == {
        "balance": 12.5, "currency": "USD"}


def test_create_account_again_says_so_on_stdout(runner, accounts):
    accounts.make(email="taken@example.com")
    result = runner.invoke(args=["silk", "create-account", "Taken@Example.com"])
    assert result.exit_code == 1
    assert "An account for taken@example.com already exists" in result.stdout
    assert "silk create-key taken@example.com" in result.stdout
    assert not result.stdout.strip().splitlines()[-1].startswith("sk-")


def test_create_account_rejects_bad_input(runner, accounts):
    accounts.make(email="taken@example.com")
    for args, message in ((["taken@example.com"], "already exists"),
                          (["new@example.com", "--tier", "gold"], "Unknown tier"),
                          (["not-an-email"], "valid email"),
                          (["x@example.com", "--credit", "abc"], "USD amount")):
        result = runner.invoke(args=["silk", "create-account", *args])
        assert result.exit_code != 0
        assert message in result.output


def test_list_and_revoke_keys(runner, client, accounts):
    acct = accounts.make(email="k@example.com")
    made = runner.invoke(args=["silk", "create-key", "k@example.com", "--name", "ci",
                               "--models", "mimo-v2.5", "--rpm", "5"])
    assert made.exit_code == 0, made.output
    second = made.output.strip().splitlines()[-1]
    listing = runner.invoke(args=["silk", "list-keys", "--account", "k@example.com"]).output
    assert "ci" in listing and second[:10] in listing and acct.key not in listing
    assert second not in listing  # only the prefix is ever shown again
    key_id = int(listing.splitlines()[0].split("\t")[0])
    assert runner.invoke(args=["silk", "revoke-key", str(key_id)]).exit_code == 0
    assert "revoked" in runner.invoke(args=["silk", "list-keys"]).output


def test_audit_passes_then_names_a_tampered_account(app, runner, accounts):
    accounts.make(credit="3", email="good@example.com")
    bad = accounts.make(credit="3", email="bad@example.com")
    ok = runner.invoke(args=["silk", "audit"])
    assert ok.exit_code == 0 and "audit ok" in ok.output
    from silk.extensions import db

    with app.app_context():
        db.session.execute(text("UPDATE accounts SET balance_units = balance_units + 5 "
                                "WHERE id = :id"), {"id": bad.id})
        db.session.commit()
    failed = runner.invoke(args=["silk", "audit"])
    assert failed.exit_code == 1
    assert "bad@example.com" in failed.output and "good@example.com" not in failed.output


def test_sweep_settles_only_holds_whose_lease_ran_out(app, runner, accounts):
    """Liveness is the lease: a hold whose worker string names a PID that is not running on
    this host (another PID namespace) is live while its lease runs."""
    from silk.extensions import db
    from silk.metering.models import Reservation

    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer runs on this host
    now = utcnow()
    with app.app_context():
        for request_id, worker, expires in (
                ("live-elsewhere", f"{socket.gethostname()}:{dead.pid}", now + timedelta(hours=1)),
                ("lease-ran-out", "other-host:4f1c", now - timedelta(seconds=1))):
            db.session.add(Reservation(account_id=acct.id, request_id=request_id,
                                       model="deepseek-chat", hold_units=5000, quota_tokens=0,
                                       prompt_estimate=10, worker=worker, expires_at=expires))
        db.session.execute(text("UPDATE accounts SET reserved_units = 10000 WHERE id = :id"),
                           {"id": acct.id})
        db.session.commit()
    assert runner.invoke(args=["silk", "sweep"]).output.splitlines()[0] == \
        "settled 1 reservation(s)"
    assert accounts.row(acct.id).reserved_units == 5000  # the live hold is kept
    assert [r.request_id for r in accounts.usage_records(acct.id)] == ["lease-ran-out"]
    result = runner.invoke(args=["silk", "sweep", "--all"])
    assert result.output.splitlines() == ["settled 1 reservation(s)",
                                          "deleted 0 expired stored response(s)",
                                          "recorded 0 key-expiry alert(s)"]
    row = accounts.row(acct.id)
    assert row.reserved_units == 0
    assert row.balance_units == 10**9 - 2 * 10 * 140  # prompt estimates at the input price
    records = accounts.usage_records(acct.id)
    assert [r.status for r in records] == ["swept", "swept"] and records[0].estimated
    assert runner.invoke(args=["silk", "audit"]).exit_code == 0


def test_create_account_credits_only_what_a_top_up_may(runner, accounts):
    """The opening credit is a top-up, as on the admin API and the console: whole cents,
    above 0, at most SILK_TOPUP_MAX; anything else is refused and makes no account (an
    amount past what a balance holds was a traceback)."""
    for n, (credit, message) in enumerate((("0.123456789", "2 decimal places"),
                                           ("10000.01", "at most $10000"),
                                           ("10000000000", "at most $10000"),
                                           ("1e30", "at most $10000"),
                                           ("-1", "greater than 0"))):
        email = f"c{n}@example.com"
        result = runner.invoke(args=["silk", "create-account", email, "--credit", credit])
        assert result.exit_code == 1, (credit, result.output, result.exception)
        assert message in result.output, (credit, result.output)
        assert "sk-" not in result.output
        shown = runner.invoke(args=["silk", "show-account", email])
        assert shown.exit_code == 1 and "No account" in shown.output, shown.output
    made = runner.invoke(args=["silk", "create-account", "ok@example.com", "--credit", "10000"])
    assert made.exit_code == 0, made.output
    assert "balance=$10000" in made.output
    assert accounts.audit() == []


def test_key_commands_check_their_options_as_the_api_does(runner, accounts):
    """A limit of 0 or below (which would mean no limit, or refuse every request), a negative
    or oversized cap, an unknown model, a past expiry or a number no column holds is refused
    with a message and exit status, never a traceback, and no key is made or changed."""
    from silk.account.service import list_keys

    acct = accounts.make(email="k@example.com")
    for options, message in ((["--tpm", "0"], "--tpm"), (["--rpm", "-1"], "--rpm"),
                             (["--rpm", "6000000000"], "--rpm"),
                             (["--concurrency", "6000000000"], "--concurrency"),
                             (["--cap-day", "-1"], "spend_caps.day"),
                             (["--cap-month", "1e20"], "spend_caps.month"),
                             (["--models", "deepseek-chatt"], "unknown model 'deepseek-chatt'"),
                             (["--expires", "2020-01-01"], "expires_at"),
                             (["--name", ""], "name")):
        result = runner.invoke(args=["silk", "create-key", "k@example.com", *options])
        assert result.exit_code in (1, 2), (options, result.output)
        assert isinstance(result.exception, SystemExit), (options, result.exception)
        assert message in result.output, (options, result.output)
    with runner.app.app_context():
        assert [key.id for key in list_keys(acct.id)] == [acct.key_id]
    for args, message in ((["set-key-caps", str(acct.key_id), "--day", "1e20"], "spend_caps.day"),
                          (["set-key-caps", str(acct.key_id), "--total", "-3"], "spend_caps.total"),
                          (["set-key-caps", "99999999999", "--day", "1"], "KEY_ID"),
                          (["revoke-key", "99999999999"], "KEY_ID"),
                          (["set-limits", str(acct.id), "--rpm", "²"], "--rpm"),
                          (["set-limits", str(acct.id), "--tpm", "6000000000"], "--tpm"),
                          (["set-tier", "big", "--discount-percent", "0",
                            "--free-tokens", "1" + "0" * 20], "--free-tokens")):
        result = runner.invoke(args=["silk", *args])
        assert result.exit_code in (1, 2), (args, result.output)
        assert isinstance(result.exception, SystemExit), (args, result.exception)
        assert message in result.output, (args, result.output)
    with runner.app.app_context():
        key = list_keys(acct.id)[0]
        assert (key.cap_day_units, key.cap_total_units, key.revoked_at) == (None, None, None)
    made = runner.invoke(args=["silk", "create-key", "k@example.com", "--tpm", "1000",
                               "--cap-day", "$2.5", "--models", "deepseek-chat"])
    assert made.exit_code == 0, made.output
    with runner.app.app_context():
        key = list_keys(acct.id)[0]
        assert (key.tpm_limit, key.cap_day_units, key.allowed_models) == (
            1000, 2_500_000_000, ["deepseek-chat"])
