"""The operator's side of rate limits: the admin API and the CLI set, show and clear the
limits of an account and of an account on a model; bad input is a 400 naming the field."""

from __future__ import annotations

import pytest


def test_admin_api_sets_shows_and_clears_limits(app, client, accounts):
    admin = accounts.make(admin=True)
    acct = accounts.make()
    url = f"/v1/admin/accounts/{acct.id}/limits"
    app.config["SILK_ACCOUNT_RPM"] = 100
    set_account = client.patch(url, headers=admin.headers,
                               json={"rpm_limit": 600, "concurrency_limit": 5})
    assert set_account.status_code == 200
    assert set_account.json | {"updated_at": None} == {
        "object": "account_limits", "model": None, "rpm_limit": 600, "tpm_limit": None,
        "concurrency_limit": 5, "updated_at": None}
    on_model = client.patch(url, headers=admin.headers,
                            json={"model": "deepseek-reasoner", "tpm_limit": 5000})
    assert on_model.json["model"] == "deepseek-reasoner" and on_model.json["tpm_limit"] == 5000
    # A field left out keeps its value; null clears one.
    client.patch(url, headers=admin.headers, json={"rpm_limit": None})
    listed = client.get(url, headers=admin.headers).json
    assert [(row["model"], row["rpm_limit"], row["tpm_limit"], row["concurrency_limit"])
            for row in listed["data"]] == [(None, None, None, 5),
                                           ("deepseek-reasoner", None, 5000, None)]
    assert listed["defaults"]["account"]["rpm_limit"] == 100
    assert listed["defaults"]["key"] == {"rpm_limit": None, "tpm_limit": None,
                                         "concurrency_limit": None}
    # Nothing left set for the model: its row goes, the defaults apply there.
    cleared = client.patch(url, headers=admin.headers,
                           json={"model": "deepseek-reasoner", "tpm_limit": None})
    assert cleared.status_code == 200 and cleared.json["tpm_limit"] is None
    assert len(client.get(url, headers=admin.headers).json["data"]) == 1


@pytest.mark.parametrize("body, param", [
    ({"rpm_limit": 0}, "rpm_limit"),
    ({"tpm_limit": "100"}, "tpm_limit"),
    ({"concurrency_limit": 2**40}, "concurrency_limit"),
    ({"model": "no-such-model", "rpm_limit": 1}, "model"),
    ({"burst": 3}, "burst"),
])
def test_admin_api_refuses_bad_limits(app, client, accounts, body, param):
    admin = accounts.make(admin=True)
    acct = accounts.make()
    answer = client.patch(f"/v1/admin/accounts/{acct.id}/limits", headers=admin.headers,
                          json=body)
    assert answer.status_code == 400, answer.json
    assert answer.json["error"]["param"] == param


def test_only_admins_and_only_real_accounts(app, client, accounts):
    admin = accounts.make(admin=True)
    user = accounts.make()
    url = f"/v1/admin/accounts/{user.id}/limits"
    assert client.patch(url, headers=user.headers, json={"rpm_limit": 1}).status_code == 403
    assert client.get(url, headers=user.headers).status_code == 403
    assert client.get("/v1/admin/accounts/999999/limits",
                      headers=admin.headers).status_code == 404


def test_cli_sets_shows_and_clears_limits(app, runner, accounts):
    acct = accounts.make()
    done = runner.invoke(args=["silk", "set-limits", str(acct.id), "--rpm", "60",
                               "--concurrency", "3"])
    assert done.exit_code == 0, done.output
    assert "(account)\trpm=60\ttpm=-\tconcurrency=3" in done.output
    done = runner.invoke(args=["silk", "set-limits", str(acct.id), "--model", "mimo-v2.5",
                               "--tpm", "1000"])
    assert "mimo-v2.5\trpm=-\ttpm=1000\tconcurrency=-" in done.output
    done = runner.invoke(args=["silk", "set-limits", str(acct.id), "--rpm", "none",
                               "--concurrency", "none"])
    shown = runner.invoke(args=["silk", "show-limits", str(acct.id)]).output
    assert "(account)" not in shown and "mimo-v2.5" in shown
    assert "default per account and model\trpm=none" in shown
    bad = runner.invoke(args=["silk", "set-limits", str(acct.id), "--rpm", "0"])
    assert bad.exit_code != 0 and "at least 1" in bad.output
    unknown = runner.invoke(args=["silk", "set-limits", str(acct.id), "--model", "nope",
                                  "--rpm", "1"])
    assert unknown.exit_code == 1 and "unknown model 'nope'" in unknown.output


def test_a_key_carries_a_concurrency_limit_and_passes_it_on(app, client, accounts):
    acct = accounts.make()
    made = client.post("/v1/keys", headers=acct.headers,
                       json={"name": "narrow", "concurrency_limit": 2}).json
    assert made["concurrency_limit"] == 2
    narrow = {"Authorization": f"Bearer {made['key']}"}
    child = client.post("/v1/keys", headers=narrow, json={"name": "child"}).json
    assert child["concurrency_limit"] == 2  # a limit left out is inherited
    wider = client.post("/v1/keys", headers=narrow, json={"concurrency_limit": 3})
    assert wider.status_code == 403 and wider.json["error"]["param"] == "concurrency_limit"
