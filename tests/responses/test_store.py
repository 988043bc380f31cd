"""Stored responses on both databases: kept only when asked, per account, until they expire."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from types import SimpleNamespace

import pytest
from openai.types.responses import Response
from sqlalchemy import func, select, text

from silk.database import set_clock, system_utcnow
from silk.extensions import db
from silk.responses.models import StoredResponse
from silk.responses.store import expire
from tests.chat.helpers import set_quota_left
from tests.fakes.upstream import count_prompt_tokens
from tests.responses.helpers import post, typed_events
from tests.support.durability import committed_lightly, statements


def _kept(app) -> int:
    with app.app_context():
        count = db.session.scalar(select(func.count()).select_from(StoredResponse))
        db.session.remove()
    return count


def _create(client, acct, **body):
    response = post(client, acct, {"model": "deepseek-chat", **body})
    assert response.status_code == 200, response.data
    return response


def test_a_stored_response_is_retrieved_listed_and_deleted(client, accounts, upstream):
    acct = accounts.make(credit="1")
    made = _create(client, acct, input=[
        {"role": "user", "content": "one"}, {"role": "user", "content": "two"},
        {"id": "mine", "role": "user", "content": "three"}], metadata={"k": "v"}).json
    got = client.get(f"/v1/responses/{made['id']}", headers=acct.headers)
    assert got.status_code == 200 and got.json == {**made, "usage": got.json["usage"]}
    assert got.json["usage"]["cost"] == pytest.approx(float(made["usage"]["cost"]))
    items = client.get(f"/v1/responses/{made['id']}/input_items", headers=acct.headers).json
    assert items["object"] == "list" and items["has_more"] is False
    assert [i["content"] for i in items["data"]] == ["three", "two", "one"]  # newest first
    assert items["first_id"] == "mine"
    page = client.get(f"/v1/responses/{made['id']}/input_items?order=asc&limit=1",
                      headers=acct.headers).json
    assert [i["content"] for i in page["data"]] == ["one"] and page["has_more"] is True
    rest = client.get(f"/v1/responses/{made['id']}/input_items?order=asc&limit=5"
                      f"&after={page['last_id']}", headers=acct.headers).json
    assert [i["content"] for i in rest["data"]] == ["two", "three"]
    assert client.get(f"/v1/responses/{made['id']}/input_items?order=up",
                      headers=acct.headers).json["error"]["param"] == "order"
    gone = client.delete(f"/v1/responses/{made['id']}", headers=acct.headers)
    assert gone.json == {"id": made["id"], "object": "response", "deleted": True}
    again = client.get(f"/v1/responses/{made['id']}", headers=acct.headers)
    assert again.status_code == 404 and again.json["error"]["code"] == "response_not_found"
    assert client.delete(f"/v1/responses/{made['id']}", headers=acct.headers).status_code == 404


def test_store_false_keeps_nothing(app, client, accounts, upstream):
    acct = accounts.make(credit="1")
    made = _create(client, acct, input="secret plan", store=False).json
    streamed = typed_events(_create(client, acct, input="secret plan", store=False,
                                    stream=True).data)[-1]["response"]
    assert _kept(app) == 0
    for response_id in (made["id"], streamed["id"]):
        assert client.get(f"/v1/responses/{response_id}",
                          headers=acct.headers).status_code == 404
    continued = post(client, acct, {"model": "deepseek-chat", "input": "x",
                                    "previous_response_id": made["id"]})
    assert continued.status_code == 404
    assert continued.json["error"]["param"] == "previous_response_id"


def test_a_streamed_response_is_stored_before_it_completes(app, client, accounts, upstream):
    acct = accounts.make(credit="1")
    final = typed_events(_create(client, acct, input="hi", stream=True).data)[-1]
    got = client.get(f"/v1/responses/{final['response']['id']}", headers=acct.headers).json
    assert got["output"] == final["response"]["output"]
    assert _kept(app) == 1


def test_previous_response_id_carries_the_chain_and_the_hold_covers_it(client, accounts,
                                                                        upstream):
    acct = accounts.make(credit="1")
    first = _create(client, acct, input="first question " * 50, instructions="only once").json
    second = _create(client, acct, input="second", previous_response_id=first["id"]).json
    _create(client, acct, input="third", previous_response_id=second["id"])
    sent = upstream.requests[-1].body["messages"]
    # Instructions are not carried over, as OpenAI documents; every input and output is.
    assert [m["role"] for m in sent] == ["user", "assistant", "user", "assistant", "user"]
    assert sent[0]["content"].startswith("first question")
    assert sent[-1]["content"] == "third"
    record = accounts.usage_records(acct.id)[-1]
    assert record.prompt_tokens == count_prompt_tokens(sent)  # billed as the fake counted
    assert accounts.audit() == []


def test_one_account_never_reads_anothers_responses(client, accounts, upstream):
    owner, other = accounts.make(credit="1"), accounts.make(credit="1")
    made = _create(client, owner, input="private").json
    for method, path in (("get", ""), ("get", "/input_items"), ("delete", "")):
        answer = getattr(client, method)(f"/v1/responses/{made['id']}{path}",
                                          headers=other.headers)
        assert answer.status_code == 404, (method, path)
        assert answer.json["error"]["type"] == "invalid_request_error"
    stolen = post(client, other, {"model": "deepseek-chat", "input": "x",
                                  "previous_response_id": made["id"]})
    assert stolen.status_code == 404 and "private" not in stolen.get_data(as_text=True)
    assert accounts.balance_units(other.id) == 10**9  # nothing was held or charged
    assert client.get(f"/v1/responses/{made['id']}", headers=owner.headers).status_code == 200


def _member(client, owner) -> SimpleNamespace:
    made = client.post("/v1/keys", headers=owner.headers, json={"role": "member"})
    assert made.status_code == 201, made.json
    return SimpleNamespace(key_id=made.json["id"],
                           headers={"Authorization": f"Bearer {made.json['key']}"})


def test_a_member_key_sees_only_its_own_keys_responses(app, client, accounts, upstream):
    owner = accounts.make(credit="1")
    alice, bob = _member(client, owner), _member(client, owner)
    owners = _create(client, owner, input="the owner's").json
    alices = _create(client, alice, input="alice's").json
    for made in (owners, alices):  # another key's response: as missing as another account's
        for method, path in (("get", ""), ("get", "/input_items"), ("delete", "")):
            answer = getattr(client, method)(f"/v1/responses/{made['id']}{path}",
                                              headers=bob.headers)
            assert answer.status_code == 404, (made["id"], method, path)
            assert answer.json["error"]["code"] == "response_not_found"
        stolen = post(client, bob, {"model": "deepseek-chat", "input": "x",
                                    "previous_response_id": made["id"]})
        assert stolen.status_code == 404
        assert stolen.json["error"]["param"] == "previous_response_id"
    # A member key reads and continues its own; the owner key reads every key's.
    assert client.get(f"/v1/responses/{alices['id']}", headers=alice.headers).status_code == 200
    assert client.get(f"/v1/responses/{owners['id']}",
                      headers=alice.headers).status_code == 404
    _create(client, alice, input="more", previous_response_id=alices["id"])
    assert client.get(f"/v1/responses/{alices['id']}", headers=owner.headers).status_code == 200
    with app.app_context():
        keys = dict(db.session.execute(select(StoredResponse.id, StoredResponse.key_id)).all())
        db.session.remove()
    assert (keys[owners["id"]], keys[alices["id"]]) == (owner.key_id, alice.key_id)
    # The owner key deletes a member's response; the member deletes only its own.
    assert client.delete(f"/v1/responses/{alices['id']}",
                         headers=owner.headers).status_code == 200
    last = _create(client, alice, input="last").json
    assert client.delete(f"/v1/responses/{last['id']}", headers=alice.headers).status_code == 200
    assert accounts.audit() == []


def test_responses_expire_through_the_sweep(app, client, accounts, upstream):
    acct = accounts.make(credit="1")
    made = _create(client, acct, input="hi").json
    start = system_utcnow()
    try:
        set_clock(lambda: start + timedelta(days=29, hours=23))
        assert client.get(f"/v1/responses/{made['id']}",
                          headers=acct.headers).status_code == 200
        with app.app_context():
            assert expire(db.engine) == 0
        set_clock(lambda: start + timedelta(days=30, minutes=1))
        assert client.get(f"/v1/responses/{made['id']}",
                          headers=acct.headers).status_code == 404  # expired, not yet swept
        result = app.test_cli_runner().invoke(args=["silk", "sweep"])
        assert "deleted 1 expired stored response(s)" in result.output
    finally:
        set_clock(None)
    assert _kept(app) == 0


def test_an_expired_response_is_missing_to_every_call_before_the_sweep(app, client, accounts,
                                                                       upstream):
    """Expired is gone, as the README says: GET, input_items, previous_response_id and
    DELETE all answer 404, whether or not the sweep has deleted the row yet."""
    acct = accounts.make(credit="1")
    made = _create(client, acct, input="hi").json
    start = system_utcnow()
    try:
        set_clock(lambda: start + timedelta(days=30, minutes=1))
        for method, path in (("get", ""), ("get", "/input_items"), ("delete", "")):
            answer = getattr(client, method)(f"/v1/responses/{made['id']}{path}",
                                              headers=acct.headers)
            assert answer.status_code == 404, (method, path, answer.json)
            assert answer.json["error"]["code"] == "response_not_found"
        continued = post(client, acct, {"model": "deepseek-chat", "input": "x",
                                        "previous_response_id": made["id"]})
        assert continued.status_code == 404
    finally:
        set_clock(None)
    assert _kept(app) == 1  # the row is the sweep's to delete


def test_retention_is_a_setting(app, client, accounts, upstream):
    app.config["SILK_RESPONSES_RETENTION_DAYS"] = 1
    acct = accounts.make(credit="1")
    made = _create(client, acct, input="hi").json
    with app.app_context():
        row = db.session.get(StoredResponse, made["id"])
        assert row.expires_at - row.created_at == timedelta(days=1)
        db.session.remove()


def test_stored_responses_go_with_their_account(app, client, accounts, upstream):
    acct = accounts.make(credit="1")
    _create(client, acct, input="hi")
    with app.app_context():
        for table in ("api_keys", "ledger_entries", "usage_records", "reservations"):
            db.session.execute(text(f"DELETE FROM {table} WHERE account_id = :a"),
                               {"a": acct.id})
        db.session.execute(text("DELETE FROM accounts WHERE id = :a"), {"a": acct.id})
        db.session.commit()
        db.session.remove()
    assert _kept(app) == 0


def test_stored_content_is_never_logged(client, accounts, upstream, caplog):
    acct = accounts.make(credit="1")
    with caplog.at_level(logging.DEBUG):
        made = _create(client, acct, input="zebra-secret-41").json
        client.get(f"/v1/responses/{made['id']}", headers=acct.headers)
        client.get(f"/v1/responses/{made['id']}/input_items", headers=acct.headers)
    assert caplog.records
    assert not [r for r in caplog.records if "zebra-secret-41" in r.getMessage()
                or "zebra-secret-41" in str(getattr(r, "fields", ""))]


def test_a_failure_to_store_is_logged_without_the_content(app, client, accounts, upstream,
                                                         caplog, monkeypatch):
    acct = accounts.make(credit="1")
    # The table is gone (as in a half-migrated database): the answer still goes out, paid.
    with app.app_context():
        db.session.execute(text("ALTER TABLE stored_responses RENAME TO stored_gone"))
        db.session.commit()
    try:
        with caplog.at_level(logging.DEBUG):
            made = _create(client, acct, input="zebra-secret-42").json
    finally:
        with app.app_context():
            db.session.rollback()
            db.session.execute(text("ALTER TABLE stored_gone RENAME TO stored_responses"))
            db.session.commit()
            db.session.remove()
    assert made["status"] == "completed"
    [failed] = [r for r in caplog.records if r.getMessage() == "storing a response failed"]
    assert not [r for r in caplog.records if "zebra-secret-42" in r.getMessage()
                or "zebra-secret-42" in str(getattr(r, "fields", ""))
                or (r.exc_text and "zebra-secret-42" in r.exc_text)
                or (r.exc_info and "zebra-secret-42" in str(r.exc_info[1]))]
    assert accounts.audit() == []


def test_text_with_a_nul_character_is_stored_and_read_back(client, accounts, upstream):
    acct = accounts.make(credit="1")
    made = _create(client, acct, input="nul \u0000 here").json
    items = client.get(f"/v1/responses/{made['id']}/input_items", headers=acct.headers).json
    assert items["data"][0]["content"][0]["text"] == "nul \u0000 here"


def test_a_stored_response_commits_without_waiting_for_the_disk(app, client, accounts,
                                                                 upstream):
    """Storing is not money: its transaction opts out of the flush (SQLite's synchronous
    NORMAL, PostgreSQL's synchronous_commit off), and the pool's connection commits
    durably again afterwards."""
    acct = accounts.make(credit="1")
    with app.app_context():
        engine = db.engine
    with statements(engine) as seen:
        made = _create(client, acct, input="kept lightly").json
    assert committed_lightly(engine, seen, "INSERT INTO stored_responses")
    with app.app_context(), db.engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        else:
            assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
    got = client.get(f"/v1/responses/{made['id']}", headers=acct.headers)
    assert got.status_code == 200 and got.json["output"] == made["output"]


@pytest.mark.parametrize("app_config", [{"SQLALCHEMY_ENGINE_OPTIONS": {"pool_recycle": 900}}])
def test_responses_are_stored_with_the_operators_own_engine_options(client, accounts, upstream):
    """An operator's SQLALCHEMY_ENGINE_OPTIONS replace the gateway's pool settings; the JSON
    columns keep their codec, which writes the answer's cost (a Decimal) as a number."""
    acct = accounts.make(credit="1")
    made = _create(client, acct, input="kept").json
    got = client.get(f"/v1/responses/{made['id']}", headers=acct.headers)
    assert got.status_code == 200
    assert got.json["usage"]["cost"] == pytest.approx(float(made["usage"]["cost"]))


def _carried(upstream) -> list[str]:
    """The user turns of the last request sent upstream."""
    return [m["content"] for m in upstream.requests[-1].body["messages"] if m["role"] == "user"]


def test_a_chain_ends_where_a_response_is_deleted_or_expired(app, client, accounts, upstream):
    acct = accounts.make(credit="1")
    made = [_create(client, acct, input="one").json]
    for word in ("two", "three", "four"):
        made.append(_create(client, acct, input=word, previous_response_id=made[-1]["id"]).json)
    _create(client, acct, input="five", previous_response_id=made[-1]["id"])
    assert _carried(upstream) == ["one", "two", "three", "four", "five"]
    client.delete(f"/v1/responses/{made[0]['id']}", headers=acct.headers)
    _create(client, acct, input="five", previous_response_id=made[-1]["id"])
    assert _carried(upstream) == ["two", "three", "four", "five"]
    with app.app_context():
        db.session.execute(text("UPDATE stored_responses SET expires_at = :past WHERE id = :id"),
                           {"past": system_utcnow() - timedelta(seconds=1), "id": made[2]["id"]})
        db.session.commit()
        db.session.remove()
    _create(client, acct, input="five", previous_response_id=made[-1]["id"])
    assert _carried(upstream) == ["four", "five"]


def test_a_chain_is_read_back_at_most_max_chain_responses(client, accounts, upstream,
                                                          monkeypatch):
    from silk.responses import store

    monkeypatch.setattr(store, "MAX_CHAIN", 2)
    acct = accounts.make(credit="1")
    made = _create(client, acct, input="one").json
    for word in ("two", "three"):
        made = _create(client, acct, input=word, previous_response_id=made["id"]).json
    _create(client, acct, input="four", previous_response_id=made["id"])
    assert _carried(upstream) == ["two", "three", "four"]


@pytest.mark.parametrize("fault", ["pieces=10 cut_after=4", 'stream_error="overloaded"'])
def test_a_stream_the_upstream_broke_is_stored_failed_and_continued(app, client, accounts,
                                                                    upstream, fault):
    """A stream the provider cut or failed mid-answer ends with response.failed; that
    Response is kept as sent (status, error, output so far, usage billed), as OpenAI keeps
    every response it creates, and a next one continues from it."""
    _broken_is_kept(app, client, accounts, upstream, fault)


@pytest.mark.parametrize("app_config", [{"SILK_UPSTREAM_READ_TIMEOUT": 0.5}])
def test_a_stream_the_upstream_let_fall_silent_is_stored_failed(app, client, accounts,
                                                                upstream):
    _broken_is_kept(app, client, accounts, upstream, "pieces=10 stall_after=4")


def _broken_is_kept(app, client, accounts, upstream, fault: str) -> None:
    acct = accounts.make(credit="1")
    set_quota_left(app, acct.id)
    response = _create(client, acct, input=f"tell me [[fake: {fault}]]", stream=True)
    final = typed_events(response.data)[-1]
    assert final["type"] == "response.failed"
    sent = final["response"]
    got = client.get(f"/v1/responses/{sent['id']}", headers=acct.headers)
    assert got.status_code == 200, got.json
    kept = got.json
    Response.model_validate(kept)
    assert kept == {**sent, "usage": kept["usage"]}
    assert kept["status"] == "failed" and kept["error"]["code"] == "server_error"
    assert kept["usage"]["cost"] == pytest.approx(float(sent["usage"]["cost"]))
    [record] = accounts.usage_records(acct.id)
    assert record.status in ("cut", "timeout", "upstream_error") and record.cost_units > 0
    assert kept["usage"]["input_tokens"] == record.prompt_tokens
    assert kept["usage"]["output_tokens"] == record.completion_tokens
    assert _kept(app) == 1
    _create(client, acct, input="go on", previous_response_id=sent["id"])
    messages = upstream.requests[-1].body["messages"]
    delivered = "".join(part["text"] for item in sent["output"]
                        for part in item.get("content", []))
    assert [m["role"] for m in messages] == (
        ["user", "assistant", "user"] if delivered else ["user", "user"])
    if delivered:
        assert messages[1]["content"] == delivered
    assert messages[-1]["content"] == "go on"
    assert accounts.audit() == []


def test_a_broken_stream_with_store_false_keeps_nothing(app, client, accounts, upstream):
    acct = accounts.make(credit="1")
    response = _create(client, acct, input="x [[fake: pieces=10 cut_after=4]]", stream=True,
                       store=False)
    assert typed_events(response.data)[-1]["type"] == "response.failed"
    assert _kept(app) == 0


def test_a_json_request_the_upstream_fails_after_the_hold_creates_no_response(
        app, client, accounts, upstream):
    """Without a stream no Response reaches the client when the provider fails (a half
    body, an error status): the answer is the 502 error alone, as OpenAI answers a request
    that fails, so there is no id to read or continue, nothing is kept and nothing charged."""
    acct = accounts.make(credit="1")
    for fault in ("pieces=10 cut_after=4", "status=500"):
        response = post(client, acct, {"model": "deepseek-chat",
                                       "input": f"x [[fake: {fault}]]"})
        assert response.status_code == 502
        assert set(response.json) == {"error"}
    assert _kept(app) == 0
    assert accounts.balance_units(acct.id) == 10**9
    assert accounts.audit() == []


def _stored_bytes(app) -> int:
    with app.app_context():
        rows = db.session.execute(select(StoredResponse.input_items, StoredResponse.response))
        size = sum(len(json.dumps(items)) + len(json.dumps(response))
                   for items, response in rows)
        db.session.remove()
    return size


PAD = "x" * 1_000_000  # a megabyte the model never reads


@pytest.mark.parametrize("padded", [
    {"input": [{"role": "user", "content": "hi", "notes": PAD}]},
    {"input": [{"role": "user", "content": [{"type": "input_text", "text": "hi",
                                             "notes": PAD}]}]},
    {"input": "hi", "metadata": {"notes": PAD}},
    {"input": "hi", "prompt_cache_key": PAD},
    {"input": "hi", "reasoning": {"summary": "auto", "notes": PAD}},
    {"input": "hi", "text": {"verbosity": "low", "notes": PAD}},
])
def test_a_response_keeps_no_more_than_a_bound_of_what_was_sent_and_paid_for(
        app, client, accounts, upstream, padded):
    """What the gateway neither sends nor reads (a field it does not know, metadata) costs
    nothing, so stored it was free room in the operator's database: a megabyte a request
    for the price of `hi`, and each continuation loaded every earlier one's into a worker's
    memory. Beyond a bound of what the request sent it is a 400 before any hold; with
    store false it is accepted (nothing is kept)."""
    acct = accounts.make(credit="1")
    before = accounts.row(acct.id)
    refused = post(client, acct, {"model": "deepseek-chat", "max_output_tokens": 5, **padded})
    assert refused.status_code == 400, refused.data[:300]
    assert refused.json["error"]["param"] == "store"
    assert _kept(app) == 0 and upstream.requests == []
    after = accounts.row(acct.id)
    assert (after.balance_units, after.reserved_units) == (before.balance_units, 0)
    unkept = post(client, acct, {"model": "deepseek-chat", "max_output_tokens": 5,
                                 "store": False, **padded})
    assert unkept.status_code == 200
    assert _kept(app) == 0
    # The same request without the padding is kept, as every request is.
    plain = post(client, acct, {"model": "deepseek-chat", "max_output_tokens": 5, "input": "hi"})
    assert plain.status_code == 200 and _kept(app) == 1
    assert _stored_bytes(app) < 16_384


def test_a_large_conversation_is_kept_whole(app, client, accounts, upstream):
    """What is sent is kept, however large: the bound is on what is not."""
    acct = accounts.make(credit="10")
    items = [{"id": f"m{i}", "role": "user", "content": [{"type": "input_text", "text": "a"}]}
             for i in range(3000)]
    made = post(client, acct, {"model": "deepseek-chat", "max_output_tokens": 5,
                               "input": items, "metadata": {"run": "1"}})
    assert made.status_code == 200, made.data[:300]
    assert _kept(app) == 1


def test_what_a_continuation_resends_does_not_make_room_for_more(app, client, accounts,
                                                                 upstream):
    """The bound is on what the request itself sent: the conversation it continues, sent
    again, is kept already (each earlier response holds its own)."""
    acct = accounts.make(credit="10")
    first = post(client, acct, {"model": "deepseek-chat", "max_output_tokens": 5,
                                "input": "word " * 40_000})
    assert first.status_code == 200
    continued = post(client, acct, {"model": "deepseek-chat", "max_output_tokens": 5,
                                    "input": "hi", "previous_response_id": first.json["id"],
                                    "metadata": {"notes": "x" * 200_000}})
    assert continued.status_code == 400 and continued.json["error"]["param"] == "store"
    assert _kept(app) == 1
