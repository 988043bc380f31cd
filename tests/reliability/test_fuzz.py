"""Property-based fuzzing of every route: random bodies, headers, query strings and paths.

Whatever arrives, the gateway must answer without a 500, in its one error envelope, and a
request it rejects must not move a cent. Routes are read from the app's url_map when the
test runs, so a route added later is fuzzed without anyone remembering to add it here.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import string
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

EXAMPLES_PER_ROUTE = 24
# The same examples every run, so CI never fails by luck; SILK_FUZZ_EXPLORE=1 searches anew.
FUZZ = {"deadline": None, "database": None, "derandomize": not os.environ.get("SILK_FUZZ_EXPLORE"),
        "suppress_health_check": list(HealthCheck)}
_ARG = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")
_HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255,
                                              blacklist_characters="\x7f"), max_size=80)
_FIELDS = ["model", "messages", "stream", "max_tokens", "temperature", "amount", "code",
           "account", "email", "invite_code", "name", "models", "rpm_limit", "tpm_limit",
           "expires_at", "expires_in_days", "tier", "credit", "admin", "disabled", "kind",
           "note", "count", "uses", "discount_percent", "monthly_free_tokens", "n", "stop",
           "stream_options", "tools", "base_url", "api_base", "thinking", "top_p", "api_key",
           "csrf_token"]
_QUERY = ["api_key", "month", "limit", "offset", "before", "email", "state", "account",
          "model", "page", "days"]
_MODELS = ["deepseek-chat", "deepseek-reasoner", "mimo-v2.5", "ark-code-latest", "gpt-4", ""]


@pytest.fixture
def app_config():
    """Let the fuzzer guess keys freely: brute-force slowing has its own test."""
    return {"SILK_AUTH_FAILURES_PER_MINUTE": 0, "SILK_REGISTRATION": "open",
            "SILK_REGISTRATION_PER_HOUR": 0}


def json_values(depth: int = 3):
    """Any JSON value, biased towards the shapes the gateway reads."""
    scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
               | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30)
               | st.sampled_from(_MODELS + ["1.5", "25", "0.01", "-1", "2026-13", "x@y.z"]))
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.sampled_from(_FIELDS) | st.text(max_size=8),
                                          inner, max_size=5), max_leaves=12)


def chat_like():
    """Chat requests that are nearly right, so the fuzzer reaches deep into the relay."""
    message = st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", "tool", "robot"]),
         "content": st.text(max_size=40) | json_values()})
    return st.fixed_dictionaries(
        {"model": st.sampled_from(_MODELS) | json_values(),
         "messages": st.lists(message, max_size=3) | json_values()},
        optional={name: json_values() for name in
                  ("stream", "max_tokens", "temperature", "n", "stream_options", "top_p",
                   "base_url", "api_base", "max_completion_tokens", "thinking")})


def bodies():
    """Request bodies: none, JSON objects, other JSON, form data or raw bytes."""
    return st.one_of(
        st.just(None), json_values().map(json.dumps), chat_like().map(json.dumps),
        st.dictionaries(st.sampled_from(_FIELDS), json_values(), max_size=6).map(json.dumps),
        st.binary(max_size=200),
        st.dictionaries(st.sampled_from(_FIELDS), st.text(max_size=20), max_size=4)
        .map(lambda d: {"form": d}))


def path_for(rule: str):
    """Concrete paths for a Flask rule: every <converter:name> gets a hostile value."""
    parts = _ARG.split(rule)
    pieces = []
    for index in range(0, len(parts), 3):
        pieces.append(st.just(parts[index]))
        if index + 2 < len(parts):
            converter = parts[index + 1] or "default"
            if converter == "int":
                pieces.append(st.sampled_from(["1", "2", "3", "9223372036854775808"])
                              | st.integers(0, 2**80).map(str))
            else:
                safe = string.ascii_letters + string.digits + "-._~%"
                if converter == "path":
                    safe += "/"
                pieces.append(st.text(alphabet=safe, min_size=1, max_size=40)
                              | st.sampled_from(_MODELS[:-1] + ["..", "free", "pro"]))
    return st.tuples(*pieces).map("".join)


def _snapshot(app):
    """Every balance, hold and ledger row count: what a rejected request must not change."""
    from silk.account.models import Account
    from silk.extensions import db
    from silk.metering.models import LedgerEntry

    with app.app_context():
        balances = {row.id: (row.balance_units, row.reserved_units) for row in
                    db.session.execute(select(Account.id, Account.balance_units,
                                              Account.reserved_units))}
        entries = db.session.scalar(select(func.count(LedgerEntry.id)))
        db.session.remove()
    return balances, entries


def _routes(app):
    rules = [r for r in app.url_map.iter_rules() if r.endpoint != "static"]
    assert any(r.rule.startswith("/v1/admin") for r in rules)
    return sorted(rules, key=lambda r: r.rule)


def _check(response, before, after, path: str = ""):
    assert response.status_code < 500, (response.status_code, response.get_data()[:300])
    assert response.headers.get("x-request-id")
    if response.status_code >= 400:
        assert after == before, "a rejected request changed the books"
        if response.mimetype == "application/json":
            body = response.get_json()
            if path.startswith("/v1/messages"):  # Anthropic's envelope
                assert body["type"] == "error" and set(body["error"]) == {"message", "type"}
                return
            assert set(body["error"]) == {"message", "type", "param", "code"}


def test_every_route_survives_hostile_requests(app, client, accounts, upstream):
    """Each route gets its own budget of examples, so none is starved by the others."""
    user = accounts.make(credit="1")
    admin = accounts.make(credit="0", admin=True)
    # Mostly real keys, so the fuzzer gets past authentication and into the handlers.
    keys = [user.key, admin.key] * 3 + ["sk-" + "x" * 45, user.key[:-1], "", "sk-\u00e9",
                                        "x" * 300]
    for rule in _routes(app):
        methods = sorted(rule.methods - {"HEAD", "OPTIONS"})

        @settings(max_examples=EXAMPLES_PER_ROUTE, **FUZZ)
        @given(method=st.sampled_from(methods * 4 + ["PUT", "DELETE", "PATCH"]),
               path=path_for(rule.rule), data=bodies(),
               key=st.sampled_from(keys) | _HEADER_TEXT,
               where=st.sampled_from(["bearer"] * 4 + ["x-api-key", "query", "raw", "none"]),
               query=st.dictionaries(st.sampled_from(_QUERY) | st.text(max_size=6),
                                     st.text(max_size=30), max_size=4),
               headers=st.dictionaries(
                   st.sampled_from(["Content-Type", "Accept", "Idempotency-Key",
                                    "X-Forwarded-For", "Origin", "Cookie", "Content-Encoding",
                                    "X-Request-Id"]), _HEADER_TEXT, max_size=4))
        def fuzz(method, path, data, key, where, query, headers):
            headers = dict(headers)
            query = dict(query)
            if where == "bearer":
                headers["Authorization"] = f"Bearer {key}"
            elif where == "x-api-key":
                headers["X-Api-Key"] = key
            elif where == "query":
                query["api_key"] = key
            elif where == "raw":
                headers["Authorization"] = key
            kwargs = {"headers": headers, "query_string": query}
            if isinstance(data, dict):
                kwargs["data"] = data["form"]
            elif data is not None:
                kwargs["data"] = data
                kwargs.setdefault("content_type", headers.pop("Content-Type", "application/json"))
            before = _snapshot(app)
            response = client.open(path, method=method, **kwargs)
            response.get_data()  # run a streamed answer to its end
            _check(response, before, _snapshot(app), path)

        fuzz()
    assert accounts.audit() == []


def test_chat_bodies_never_500_and_rejections_are_free(app, client, accounts, upstream):
    """The chat endpoint moves money, so it gets a deeper search of near-valid bodies."""
    user = accounts.make(credit="1")

    @settings(max_examples=150, **FUZZ)
    @given(payload=chat_like(), accept=st.sampled_from(["application/json", "*/*", ""]))
    def fuzz(payload, accept):
        before = _snapshot(app)
        response = client.post("/v1/chat/completions", data=json.dumps(payload),
                               content_type="application/json",
                               headers={**user.headers, "Accept": accept})
        response.get_data()
        _check(response, before, _snapshot(app))

    fuzz()
    assert accounts.audit() == []
    assert accounts.row(user.id).reserved_units == 0


def test_numbers_no_column_can_hold_are_400_not_500(client, accounts):
    """What the fuzzer first found: ids and limits past a column's range reached the database."""
    admin = accounts.make(admin=True)
    huge = 2**64
    for response in (client.get(f"/v1/admin/accounts/{huge}", headers=admin.headers),
                     client.delete(f"/v1/keys/{huge}", headers=admin.headers),
                     client.delete(f"/v1/admin/keys/{huge}", headers=admin.headers)):
        assert response.status_code == 400, response.json
        assert response.json["error"]["code"] == "value_out_of_range"
    # Past 32 bits, more than the INTEGER column holds: the same 400 naming it on both.
    big_limit = client.post("/v1/keys", headers=admin.headers, json={"rpm_limit": 2**40})
    assert big_limit.status_code == 400, big_limit.json
    assert big_limit.json["error"]["param"] == "rpm_limit"
    assert accounts.audit() == []


@pytest.mark.parametrize("digits", ["\u00b2", "\u2460", "1\u00b2", "1" * 5000],
                         ids=["superscript", "circled", "mixed", "5000-digits"])
def test_digits_python_calls_digits_but_int_refuses_are_400_or_404_not_500(client, accounts,
                                                                          digits):
    """str.isdigit() is true for '²' and '①', which int() refuses, and int() refuses more
    than 4,300 digits: a limit, a ledger cursor or an account reference written so reached
    int() and was a 500."""
    admin = accounts.make(admin=True, credit="5")
    user = accounts.make(credit="1")
    for path, param in ((f"/v1/admin/accounts?limit={digits}", "limit"),
                        (f"/v1/admin/accounts?offset={digits}", "offset"),
                        (f"/v1/admin/accounts/{user.id}/ledger?before={digits}", "before"),
                        (f"/v1/admin/accounts/{user.id}/ledger?limit={digits}", "limit"),
                        (f"/v1/admin/redemption-codes?limit={digits}", "limit"),
                        (f"/v1/responses/resp_x/input_items?limit={digits}", "limit")):
        answer = client.get(path, headers=admin.headers)
        assert answer.status_code == 400, (path, answer.get_data()[:300])
        assert answer.json["error"]["param"] == param
    usage = client.get(f"/v1/admin/usage?account={digits}", headers=admin.headers)
    assert usage.status_code == 404, usage.get_data()[:300]
    assert usage.json["error"]["code"] == "account_not_found"
    before = (accounts.balance_units(admin.id), accounts.balance_units(user.id))
    topup = client.post("/v1/topup", json={"amount": 1, "account": digits},
                        headers=admin.headers)
    assert topup.status_code == 404, topup.get_data()[:300]
    assert topup.json["error"]["code"] == "account_not_found"
    assert (accounts.balance_units(admin.id), accounts.balance_units(user.id)) == before
    assert accounts.audit() == []


def _nested(depth: int) -> str:
    """A JSON array nested `depth` levels deep."""
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [255, 300, 1023])
@pytest.mark.parametrize("field", ["tools", "metadata"])
def test_deeply_nested_json_is_400_naming_the_field(client, accounts, upstream, field, depth):
    """orjson reads 1,024 levels but writes 254: such a body parsed, then failed upstream."""
    user = accounts.make(credit="1")
    body = ('{"model": "deepseek-chat", "messages": [{"role": "user", "content": "hi"}], '
            f'"{field}": {_nested(depth)}}}')
    before = _snapshot_units(accounts, user)
    response = client.post("/v1/chat/completions", data=body, content_type="application/json",
                           headers={**user.headers, "Accept": "application/json"})
    assert response.status_code == 400, response.get_data()[:300]
    error = response.json["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"].startswith(f"{field}[0][0]")
    assert upstream.requests == []
    assert _snapshot_units(accounts, user) == before
    # Every JSON endpoint reads its body the same way.
    deep_key = client.post("/v1/keys", data=f'{{"name": "k", "models": {_nested(depth)}}}',
                           content_type="application/json", headers=user.headers)
    assert deep_key.status_code == 400
    assert deep_key.json["error"]["param"].startswith("models")


def test_json_deeper_than_the_parser_reads_is_400_saying_so(client, accounts, upstream):
    user = accounts.make(credit="1")
    body = ('{"model": "deepseek-chat", "messages": [{"role": "user", "content": "hi"}], '
            f'"tools": {_nested(5000)}}}')
    response = client.post("/v1/chat/completions", data=body, content_type="application/json",
                           headers=user.headers)
    assert response.status_code == 400
    assert response.json["error"]["code"] == "nesting_too_deep"
    assert upstream.requests == []


def test_nesting_a_real_request_uses_is_relayed(client, accounts, upstream):
    """A JSON schema in `tools` nests a few dozen levels at most: that passes untouched."""
    user = accounts.make(credit="1")
    schema: dict = {"type": "string"}
    for _ in range(40):  # 80 levels of properties
        schema = {"type": "object", "properties": {"inner": schema}}
    body = {"model": "deepseek-chat", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 5, "tools": [{"type": "function",
                                        "function": {"name": "f", "parameters": schema}}]}
    response = client.post("/v1/chat/completions", json=body,
                           headers={**user.headers, "Accept": "application/json"})
    assert response.status_code == 200, response.json
    assert upstream.requests[0].body["tools"] == body["tools"]


@pytest.mark.parametrize("part,param", [
    ({"type": "text", "text": 5}, "text"),
    ({"type": "text", "text": ["a"]}, "text"),
    ({"type": "text", "text": None}, "text"),
    ({"type": "text"}, "text"),
    ({"type": "image_url", "image_url": {"url": 7}}, "image_url.url"),
    ({"type": "image_url", "image_url": 7}, "image_url"),
])
def test_a_content_part_of_the_wrong_shape_is_400_naming_it(client, accounts, upstream, part,
                                                            param):
    user = accounts.make(credit="1")
    body = {"model": "deepseek-chat", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "look"}, part]}]}
    response = client.post("/v1/chat/completions", json=body,
                           headers={**user.headers, "Accept": "application/json"})
    assert response.status_code == 400, response.get_data()[:300]
    assert response.json["error"]["param"] == f"messages[1].content[1].{param}"
    assert upstream.requests == []
    assert accounts.usage_records(user.id) == []


def test_content_parts_the_gateway_does_not_read_pass_through(client, accounts, upstream):
    user = accounts.make(credit="1")
    parts = [{"type": "text", "text": "look"},
             {"type": "image_url", "image_url": "https://example.com/a.png"},
             {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
             {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
             {"type": "input_audio", "input_audio": {"data": "data:audio/wav;base64,AA"}}]
    response = client.post("/v1/chat/completions", json={
        "model": "deepseek-chat", "max_tokens": 5,
        "messages": [{"role": "user", "content": parts}]},
        headers={**user.headers, "Accept": "application/json"})
    assert response.status_code == 200, response.json
    assert upstream.requests[0].body["messages"][0]["content"] == parts


@pytest.mark.parametrize("month", ["9999-12", "9999-13", "0000-01", "1969-12"])
@pytest.mark.parametrize("path", ["/v1/usage", "/v1/billing", "/v1/admin/usage"])
def test_a_month_past_what_dates_hold_is_400_naming_month(client, accounts, path, month):
    admin = accounts.make(admin=True)
    response = client.get(path, query_string={"month": month}, headers=admin.headers)
    assert response.status_code == 400, response.get_data()[:300]
    assert response.json["error"]["param"] == "month"
    assert response.json["error"]["type"] == "invalid_request_error"
    assert client.get(path, query_string={"month": "9999-11"},
                      headers=admin.headers).status_code == 200


def _snapshot_units(accounts, user) -> tuple[int, int]:
    row = accounts.row(user.id)
    return row.balance_units, row.reserved_units


_SURFACE_BODIES = {
    "/v1/chat/completions": {"model": "deepseek-chat", "max_tokens": 5, "stream": False,
                             "messages": [{"role": "user", "content": "hi"}]},
    "/v1/messages": {"model": "deepseek-chat", "max_tokens": 5,
                     "messages": [{"role": "user", "content": "hi"}]},
    "/v1/messages/count_tokens": {"model": "deepseek-chat",
                                  "messages": [{"role": "user", "content": "hi"}]},
    "/v1/responses": {"model": "deepseek-chat", "input": "hi", "max_output_tokens": 16},
    "/v1/topup": {"amount": 1},
}


def _assert_envelope(path: str, response) -> dict:
    """The error of a response, checked to be in its surface's envelope."""
    body = response.get_json()
    if path.startswith("/v1/messages"):
        assert body["type"] == "error" and set(body["error"]) == {"type", "message"}, body
        return body["error"]
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd", "x-unknown",
                                      "gzip, identity"])
@pytest.mark.parametrize("path", list(_SURFACE_BODIES))
def test_a_compressed_body_is_a_415_saying_so_and_moves_nothing(app, client, accounts,
                                                                upstream, path, encoding):
    """A body sent with a Content-Encoding was read as if it were plain: gzip and deflate
    were "not valid JSON", and br, zstd or a made-up coding over a plain body were served."""
    admin = accounts.make(credit="1", admin=True)
    raw = json.dumps(_SURFACE_BODIES[path]).encode()
    data = {"gzip": gzip.compress, "deflate": zlib.compress}.get(encoding.split(",")[0],
                                                                 lambda b: b)(raw)
    before = _snapshot(app)
    response = client.post(path, data=data, content_type="application/json",
                           headers={**admin.headers, "Content-Encoding": encoding,
                                    "Accept": "application/json"})
    assert response.status_code == 415, response.get_data()[:300]
    error = _assert_envelope(path, response)
    assert "Content-Encoding" in error["message"] and "uncompressed" in error["message"]
    assert upstream.requests == []
    assert _snapshot(app) == before
    assert accounts.usage_records(admin.id) == []
    # Identity is no coding at all.
    plain = client.post(path, data=raw, content_type="application/json",
                        headers={**admin.headers, "Content-Encoding": "identity",
                                 "Accept": "application/json"})
    assert plain.status_code == 200, plain.get_data()[:300]


def test_a_nul_in_a_lookup_is_the_same_answer_on_both_databases(app, client, accounts,
                                                                 upstream):
    """PostgreSQL's text holds no NUL: a response id, an account or an email filter with one
    reached it and was a vague 400 `value_out_of_range` naming nothing, where SQLite said
    404; and SQLite's email filter cut at the NUL and listed every account. No id or
    address holds a NUL, so each is now what a lookup of nothing answers, on both."""
    admin = accounts.make(credit="5", admin=True)
    user = accounts.make(credit="1")
    headers = {**admin.headers, "Accept": "application/json"}
    stored = client.post("/v1/responses", json={"model": "deepseek-chat", "input": "hi",
                                                "max_output_tokens": 16}, headers=headers)
    assert stored.status_code == 200, stored.get_data()[:300]
    before = _snapshot(app)
    upstream.clear()
    for response, param, code in (
            (client.post("/v1/responses", headers=headers, json={
                "model": "deepseek-chat", "input": "hi", "previous_response_id": "resp_\x00"}),
             "previous_response_id", "response_not_found"),
            (client.get("/v1/responses/resp_%00", headers=headers), None,
             "response_not_found"),
            (client.delete("/v1/responses/resp_%00", headers=headers), None,
             "response_not_found"),
            (client.get("/v1/responses/resp_%00/input_items", headers=headers), None,
             "response_not_found"),
            (client.post("/v1/topup", headers=headers,
                         json={"amount": 1, "account": f"user{user.id}@example.com\x00"}),
             "account", "account_not_found"),
            (client.get("/v1/admin/usage", headers=headers,
                        query_string={"account": "\x00"}), "account", "account_not_found")):
        assert response.status_code == 404, response.get_data()[:300]
        assert response.json["error"]["param"] == param
        assert response.json["error"]["code"] == code
    listed = client.get("/v1/admin/accounts", headers=headers, query_string={"email": "\x00"})
    assert listed.status_code == 200, listed.get_data()[:300]
    assert listed.json["data"] == []
    assert upstream.requests == []
    assert _snapshot(app) == before
    assert accounts.audit() == []


@pytest.mark.parametrize("raw,says", [
    (b'\xef\xbb\xbf{"model": "deepseek-chat"}', "byte order mark"),
    ('{"model": "caf\xe9"}'.encode("latin-1"), "not UTF-8 text (byte 14 is 0xe9)"),
    ('{"model": "x"}'.encode("utf-16"), "not UTF-8 text (byte 0 is 0xff)"),
    (b'{"model": "\\ud800"}', "surrogate"),
    (b'{"temperature": NaN}', "line 1 column 17"),
    (b'{"temperature": 1e400}', "infinity"),
    (b'{"model": "x"} trailing', "after document"),
    (b'{"model": "x",}', "trailing comma"),
], ids=["bom", "latin-1", "utf-16", "lone-surrogate", "nan", "1e400", "trailing", "comma"])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages", "/v1/responses",
                                  "/v1/keys"])
def test_a_body_that_is_not_json_is_a_400_saying_what_and_where(client, accounts, upstream,
                                                                 path, raw, says):
    """Each was "The request body is not valid JSON." alone: a BOM from a Windows editor,
    Latin-1 text or a lone surrogate looked no different from a truncated body."""
    user = accounts.make(credit="1")
    response = client.post(path, data=raw, content_type="application/json",
                           headers=user.headers)
    assert response.status_code == 400, response.get_data()[:300]
    message = _assert_envelope(path, response)["message"]
    assert message.startswith("The request body is not valid JSON: ") and says in message, \
        message
    assert upstream.requests == []
