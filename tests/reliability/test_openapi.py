"""The published OpenAPI document: complete, and true enough for schemathesis to hold us to it.

schemathesis generates requests from the document and checks every answer against it, in
process against the WSGI app: no 500, documented statuses and media types, bodies matching
their schemas, and a rejected request never moves money.
"""

from __future__ import annotations

import re

import pytest
import schemathesis
from hypothesis import given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.reliability.test_fuzz import FUZZ, _snapshot

EXAMPLES = 12
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
_ARG = re.compile(r"<(?:\w+(?:\([^)]*\))?:)?(\w+)>")


def openapi_path(rule: str) -> str:
    """Flask's `/v1/keys/<int:key_id>` is OpenAPI's `/v1/keys/{key_id}`."""
    return _ARG.sub(r"{\1}", rule)


def _routes(app):
    for rule in app.url_map.iter_rules():
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            yield openapi_path(rule.rule), method.lower(), rule


def test_every_api_route_is_documented_and_nothing_else(client, app):
    doc = client.get("/openapi.json").json
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    missing = [f"{method.upper()} {path}" for path, method, rule in _routes(app)
               if (path.startswith("/v1/") or path in ("/healthz", "/readyz", "/metrics"))
               and method not in paths.get(path, {})]
    assert not missing, f"document these in silk/openapi.py: {missing}"
    served = {(path, method) for path, method, _ in _routes(app)}
    phantom = [f"{m.upper()} {p}" for p, ops in paths.items() for m in ops
               if (p, m) not in served]
    assert not phantom, f"documented but not served: {phantom}"


def test_admin_operations_say_so_and_public_ones_need_no_key(client):
    paths = client.get("/openapi.json").json["paths"]
    for path, operations in paths.items():
        for operation in operations.values():
            if path.startswith("/v1/admin/"):
                assert operation["tags"] == ["admin"]
            public = path in ("/v1/pricing", "/v1/register") or not path.startswith("/v1/")
            assert ("security" in operation) == public, path


def _hold_to_the_document(app, operation, key: str) -> None:
    """Generate requests for one operation and check every answer against the document."""

    @settings(max_examples=EXAMPLES, **FUZZ)
    @given(case=operation.as_strategy())
    def run(case):
        before = _snapshot(app)
        response = case.call(headers={"Authorization": f"Bearer {key}"})
        case.validate_response(response, checks=CHECKS)
        if response.status_code >= 400:
            assert _snapshot(app) == before, "a rejected request changed the books"

    try:
        run()
    except Exception as exc:
        exc.add_note(f"operation: {operation.label}")
        raise


def test_schemathesis_finds_no_broken_promise(app, accounts, upstream):
    """Every operation gets its own examples and fresh accounts, so none starves or poisons."""
    app.config.update(SILK_AUTH_FAILURES_PER_MINUTE=0, SILK_REGISTRATION_PER_HOUR=0)
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 30
    for operation in operations:
        user = accounts.make(credit="1")
        admin = accounts.make(admin=True)
        admin_only = "admin" in (operation.definition.raw.get("tags") or ())
        _hold_to_the_document(app, operation, admin.key if admin_only else user.key)
    assert accounts.audit() == []


@pytest.fixture
def app_config():
    """Open registration, so the fuzzer reaches account creation too."""
    return {"SILK_REGISTRATION": "open"}
