"""GET /openapi.json: the gateway's public contract as an OpenAPI 3 document.

Written by hand rather than derived from the code, so it states what clients may rely on;
a test keeps it complete (every /v1 route is documented) and schemathesis keeps it true.
Only the model ids come from the running configuration: they are this deployment's.
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from silk.openapi_schemas import SCHEMAS, STRING, listing, obj, ref

bp = Blueprint("openapi", __name__)

JSON = "application/json"
AUTH_SCHEMES = [{"bearerAuth": []}, {"apiKeyHeader": []}, {"apiKeyQuery": []}]


def response(schema: dict | None, description: str, media: str = JSON) -> dict:
    """A response with one media type (or none)."""
    answer = {"description": description}
    if schema is not None:
        answer["content"] = {media: {"schema": schema}}
    return answer


ERROR = response(ref("Error"), "An error, in the one OpenAI-style envelope.")
HTML = response({"type": "string"}, "An HTML page.", "text/html")
PAGE_ERROR = {"description": "The page again with an error, or a redirect."}


def op(summary: str, ok: dict, *, tag: str, status: str = "200", auth: bool = True,
       params: tuple = (), body: dict | None = None, error: dict = ERROR) -> dict:
    """One operation: its summary, success response, parameters, body and security."""
    operation = {"summary": summary, "tags": [tag], "responses": {status: ok, "default": error}}
    if not auth:
        operation["security"] = []
    if params:
        operation["parameters"] = list(params)
    if body is not None:
        operation["requestBody"] = body
    return operation


def json_body(name: str, required: bool = True) -> dict:
    """A JSON request body of a component schema."""
    return {"required": required, "content": {JSON: {"schema": ref(name)}}}


def form_body(**fields) -> dict:
    """An HTML form body."""
    return {"required": True, "content": {"application/x-www-form-urlencoded": {
        "schema": obj(**{name: STRING for name in fields})}}}


def path_id(name: str) -> dict:
    """An integer id in the path."""
    return {"name": name, "in": "path", "required": True,
            "schema": {"type": "integer", "minimum": 0, "format": "int64"}}


def query(name: str, schema: dict, description: str = "") -> dict:
    """An optional query parameter."""
    param = {"name": name, "in": "query", "required": False, "schema": schema}
    if description:
        param["description"] = description
    return param


MONTH = query("month", {"type": "string", "pattern": r"^\d{4}-\d{2}$"},
              "YYYY-MM (UTC); the current month when omitted.")
LIMIT = query("limit", {"type": "integer", "minimum": 1, "maximum": 1000})
IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "required": False,
               "schema": {"type": "string", "maxLength": 200},
               "description": "A retry with the same key applies once."}
ADMIN = "admin"


def _paths(models: list[str]) -> dict:
    model_id = {"type": "string", "enum": models}
    chat_ok = {"description": "The completion: JSON, or server-sent events ending "
                              "`data: [DONE]`.",
               "headers": {"x-silk-cost": {"description": "USD charged (JSON answers).",
                                           "schema": STRING}},
               "content": {JSON: {"schema": ref("ChatCompletion")},
                           # Before OpenAPI 3.2 an event stream's schema is one event's.
                           "text/event-stream": {"schema": obj(
                               ("data",), data={"type": "string", "description": (
                                   "A chat.completion.chunk, an {\"error\": ...} object "
                                   "after a failure, or [DONE]")}, event=STRING)}}}
    account = (path_id("account_id"),)
    return {
        **_responses_paths(),
        "/v1/chat/completions": {"post": op(
            "Create a chat completion (streams by default).", chat_ok, tag="chat",
            body=json_body("ChatCompletionRequest"))},
        **_messages_paths(),
        "/v1/models": {"get": op("List the models this key may use.",
                                 response(listing("Model"), "The models."), tag="models")},
        "/v1/models/{model_id}": {"get": op(
            "Describe one model.", response(ref("Model"), "The model."), tag="models",
            params=({"name": "model_id", "in": "path", "required": True,
                     "schema": model_id},))},
        "/v1/pricing": {"get": op("Every model's price and every tier; no key needed.",
                                  response(ref("Pricing"), "Prices."), tag="models",
                                  auth=False)},
        "/v1/balance": {"get": op("The caller's balance (owner keys).", response(ref("Balance"),
                                                                    "The balance."),
                                  tag="billing")},
        "/v1/usage": {"get": op("A month's requests, tokens and cost, by model and day (a "
                                "member key: its own).",
                                response(ref("UsageReport"), "Usage."), tag="billing",
                                params=(MONTH,))},
        "/v1/billing": {"get": op("A month's bill: costs, free quota, balance (owner keys).",
                                  response(ref("Billing"), "The bill."), tag="billing",
                                  params=(MONTH,))},
        "/v1/topup": {"post": op(
            "Add funds: a redemption code, an admin credit, or open self-service (owner keys).",
            response(ref("Topup"), "The credit and the new balance."), tag="billing",
            params=(IDEMPOTENCY,), body=json_body("TopupRequest"))},
        "/v1/keys": {
            "get": op("The caller's account's keys (prefixes only); a member key sees itself.",
                      response(listing("Key"), "Keys."), tag="keys"),
            "post": op("Make a key, no wider than the calling key (caps included); shown "
                       "once. Owner keys only.",
                       response(ref("NewKey"), "The new key."), tag="keys", status="201",
                       body=json_body("KeyCreate", required=False))},
        "/v1/keys/{key_id}": {
            "delete": op("Revoke one of the caller's keys (owner keys).",
                         response(ref("Key"), "The revoked key."), tag="keys",
                         params=(path_id("key_id"),)),
            "patch": op("Rename a key or change its spend caps or rate limits, never above "
                        "the caller's (owner keys).", response(ref("Key"), "The key."), tag="keys",
                        params=(path_id("key_id"),), body=json_body("KeyUpdate"))},
        "/v1/account/alerts": {
            "get": op("Where the account's alerts go, and its balance threshold (owner keys).",
                      response(ref("AlertSettings"), "The settings."), tag="accounts"),
            "put": op("Set the account's alert webhook, address and balance threshold; "
                      "a new webhook's signing secret is shown once (owner keys).",
                      response(ref("AlertSettings"), "The settings."), tag="accounts",
                      body=json_body("AlertSettingsUpdate"))},
        "/v1/register": {
            "get": op("Whether registration is open, by invite, or closed.",
                      response(ref("RegistrationMode"), "The mode."), tag="accounts",
                      auth=False),
            "post": op("Create an account and its first key (shown once).",
                       response(ref("NewAccount"), "The account."), tag="accounts",
                       status="201", auth=False, body=json_body("Register"))},
        **_admin_paths(account),
        **_operator_paths(),
    }


def _responses_paths() -> dict:
    ok = {"description": "The Response object, or OpenAI's typed server-sent events "
                         "(`event:` and `data:`) ending with response.completed, "
                         "response.incomplete or response.failed.",
          "headers": {"x-silk-cost": {"description": "USD charged (JSON answers).",
                                      "schema": STRING}},
          "content": {JSON: {"schema": ref("Response")},
                      "text/event-stream": {"schema": obj(
                          ("data",), data={"type": "string", "description": (
                              "One typed event: {\"type\", \"sequence_number\", ...}")},
                          event=STRING)}}}
    response_id = ({"name": "response_id", "in": "path", "required": True,
                    "schema": STRING},)
    return {
        "/v1/responses": {"post": op(
            "Create a model response (OpenAI Responses; JSON unless stream is true).", ok,
            tag="responses", body=json_body("ResponseRequest"))},
        "/v1/responses/{response_id}": {
            "get": op("A stored response of the caller's account (a member key: of its own "
                      "key).",
                      response(ref("Response"), "The response."), tag="responses",
                      params=response_id),
            "delete": op("Delete a stored response (a member key: one of its own key's).",
                         response(ref("ResponseDeleted"), "Deleted."),
                         tag="responses", params=response_id)},
        "/v1/responses/{response_id}/input_items": {"get": op(
            "A stored response's input items, paged.", response(ref("ResponseItemList"),
                                                                 "The items."),
            tag="responses", params=(*response_id, query("after", STRING),
                                     query("limit", {"type": "integer", "minimum": 1,
                                                     "maximum": 100}),
                                     query("order", {"type": "string",
                                                     "enum": ["asc", "desc"]})))},
    }


def _admin_paths(account: tuple) -> dict:
    key_id = (path_id("key_id"),)
    return {
        "/v1/admin/accounts": {
            "get": op("List accounts.", response(listing("Account"), "Accounts."), tag=ADMIN,
                      params=(query("email", STRING), LIMIT,
                              query("offset", {"type": "integer", "minimum": 0}))),
            "post": op("Create an account; its first key is shown once.",
                       response(ref("NewAccount"), "The account."), tag=ADMIN, status="201",
                       body=json_body("AccountCreate"))},
        "/v1/admin/accounts/{account_id}": {
            "get": op("One account with its keys.", response(ref("Account"), "The account."),
                      tag=ADMIN, params=account),
            "patch": op("Change a tier, or disable or enable.",
                        response(ref("Account"), "The account."), tag=ADMIN, params=account,
                        body=json_body("AccountPatch"))},
        "/v1/admin/accounts/{account_id}/credits": {"post": op(
            "Credit, refund or adjust an account.", response(ref("Topup"), "The entry."),
            tag=ADMIN, params=(*account, IDEMPOTENCY), body=json_body("Credit"))},
        "/v1/admin/accounts/{account_id}/keys": {
            "get": op("An account's keys.", response(listing("Key"), "Keys."), tag=ADMIN,
                      params=account),
            "post": op("Make a key for an account.", response(ref("NewKey"), "The key."),
                       tag=ADMIN, status="201", params=account,
                       body=json_body("KeyCreate", required=False))},
        "/v1/admin/accounts/{account_id}/limits": {
            "get": op("The rate limits set for an account and for it on each model, and the "
                      "operator's defaults.", response(ref("AccountLimitList"), "Limits."),
                      tag=ADMIN, params=account),
            "patch": op("Set or clear (null) rate limits of an account, or with `model` of "
                        "the account on that model; fields left out are kept.",
                        response(ref("AccountLimits"), "The limits now set there."),
                        tag=ADMIN, params=account, body=json_body("AccountLimitsPatch"))},
        "/v1/admin/accounts/{account_id}/ledger": {"get": op(
            "An account's ledger, newest first.", response(listing("LedgerEntry"),
                                                           "Entries."),
            tag=ADMIN, params=(*account, LIMIT, query("before", {"type": "integer",
                                                                 "minimum": 1})))},
        "/v1/admin/keys/{key_id}": {
            "delete": op("Revoke any key.", response(ref("Key"), "The revoked key."),
                         tag=ADMIN, params=key_id),
            "patch": op("Rename any key or set its spend caps or rate limits.",
                        response(ref("Key"), "The key."),
                        tag=ADMIN, params=key_id, body=json_body("KeyUpdate"))},
        "/v1/admin/redemption-codes": {
            "get": op("Redemption codes (prefixes only).", response(listing("Code"),
                                                                    "Codes."),
                      tag=ADMIN, params=(query("state", {"type": "string", "enum": [
                          "unused", "redeemed", "expired"]}), LIMIT)),
            "post": op("Issue redemption codes; shown once.", response(listing("Code"),
                                                                       "Codes."),
                       tag=ADMIN, status="201", body=json_body("CodeIssue"))},
        "/v1/admin/invite-codes": {
            "get": op("Invite codes (prefixes only).", response(listing("Invite"),
                                                                "Invites."),
                      tag=ADMIN, params=(LIMIT,)),
            "post": op("Issue invite codes; shown once.", response(listing("Invite"),
                                                                   "Invites."),
                       tag=ADMIN, status="201", body=json_body("InviteIssue",
                                                                required=False))},
        "/v1/admin/tiers": {"get": op("Every tier in effect.", response(listing("Tier"),
                                                                         "Tiers."),
                                      tag=ADMIN)},
        "/v1/admin/tiers/{name}": {"put": op(
            "Create or change a tier.", response(ref("Tier"), "The tier."), tag=ADMIN,
            params=({"name": "name", "in": "path", "required": True, "schema": STRING},),
            body=json_body("TierInput"))},
        "/v1/admin/usage": {"get": op(
            "A month's usage by account, by model and by day.", response(ref("AdminUsage"),
                                                                 "Usage."),
            tag=ADMIN, params=(MONTH, query("account", STRING)))},
        "/v1/admin/margin": {"get": op(
            "A month's revenue, upstream cost and margin by model, provider or day; models "
            "priced below their upstream cost.", response(ref("Margin"), "The report."),
            tag=ADMIN, params=(MONTH, query("by", STRING)))},
        "/v1/admin/providers": {"get": op(
            "Each model's routes and each provider key: serving or resting (until when), "
            "recent failures, latency percentiles, as the answering worker sees them.",
            response(ref("Providers"), "The view."), tag=ADMIN)},
        "/v1/admin/audit": {"get": op(
            "The books check: every ledger sums to its balance.",
            response(ref("Audit"), "The result."), tag=ADMIN)},
    }


def _operator_paths() -> dict:
    status = response(ref("Status"), "Up.")
    prometheus = response(STRING, "Prometheus text.", "text/plain")
    page = {"get": op("The page.", HTML, tag="web", auth=False, error=PAGE_ERROR)}
    return {
        "/healthz": {"get": op("Alive while the process lives.", status, tag="ops",
                               auth=False)},
        "/readyz": {"get": op("Ready while the database answers (503 otherwise).", status,
                              tag="ops", auth=False)},
        "/metrics": {"get": op("Prometheus metrics, for allowed addresses only.",
                               prometheus, tag="ops", auth=False)},
        "/openapi.json": {"get": op("This document.", response({"type": "object"},
                                                               "OpenAPI 3."),
                                    tag="ops", auth=False)},
        "/register/": {**page, "post": op(
            "Sign up from the HTML form; the key is shown once.", HTML, tag="web",
            status="201", auth=False, body=form_body(email=1, invite_code=1),
            error=PAGE_ERROR)},
        "/dashboard/": page,
        "/dashboard/login": {**page, "post": op(
            "Sign in to the dashboard with an API key.", HTML, tag="web", auth=False,
            body=form_body(api_key=1), error=PAGE_ERROR)},
        "/dashboard/logout": {"post": op("Sign out.", HTML, tag="web", auth=False,
                                         error=PAGE_ERROR)},
        "/dashboard/redeem": {"post": op(
            "Redeem a code (signed-in session and CSRF token).", HTML, tag="web",
            auth=False, body=form_body(code=1, csrf_token=1), error=PAGE_ERROR)},
        "/dashboard/keys": {**page, "post": op(
            "Make a key (signed-in session and CSRF token).", HTML, tag="web", auth=False,
            body=form_body(name=1, csrf_token=1), error=PAGE_ERROR)},
        "/dashboard/keys/{key_id}/revoke": {"post": op(
            "Revoke a key (signed-in session and CSRF token).", HTML, tag="web",
            auth=False, params=(path_id("key_id"),), body=form_body(csrf_token=1),
            error=PAGE_ERROR)},
    }


def _messages_paths() -> dict:
    """Anthropic Messages: its own error envelope, accepted `?beta=true`."""
    error = response(ref("AnthropicError"), "An error, in Anthropic's envelope.")
    beta = (query("beta", STRING, "Sent by Claude Code; accepted and ignored."),)
    ok = {"description": "The Message, or Anthropic's server-sent events (message_start ... "
                         "message_stop, or an error event after a failure); the final "
                         "message_delta's usage carries the cost.",
          "headers": {"x-silk-cost": {"description": "USD charged (JSON answers).",
                                      "schema": STRING}},
          "content": {JSON: {"schema": ref("AnthropicMessage")},
                      "text/event-stream": {"schema": obj(
                          ("data",), data={"type": "string", "description": (
                              "One event: {\"type\", ...}")}, event=STRING)}}}
    return {
        "/v1/messages": {"post": op(
            "Create a Message (Anthropic Messages; streams when stream is true).", ok,
            tag="messages", params=beta, body=json_body("MessageRequest"), error=error)},
        "/v1/messages/count_tokens": {"post": op(
            "Estimate a Message's input tokens; free, rate-limited.",
            response(ref("TokenCount"), "The estimate."), tag="messages", params=beta,
            body=json_body("MessageCountRequest"), error=error)},
    }


def document(models: list[str]) -> dict:
    """The whole OpenAPI 3.0 document for a gateway serving `models`."""
    request = SCHEMAS["ChatCompletionRequest"]
    schemas = {**SCHEMAS, "ChatCompletionRequest": {**request, "properties": {
        **request["properties"], "model": {"type": "string", "enum": models}}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "SilkGateway", "version": "1",
                 "description": "An OpenAI-compatible LLM gateway with exact per-token "
                                "billing. Errors are always {\"error\": {\"message\", "
                                "\"type\", \"param\", \"code\"}}."},
        "security": AUTH_SCHEMES,
        "paths": _paths(models),
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer"},
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
                "apiKeyQuery": {"type": "apiKey", "in": "query", "name": "api_key"},
            },
        },
    }


@bp.get("/openapi.json")
def openapi_json():
    """Publish the document, built once per app from its model catalogue."""
    from silk.catalog import catalogue

    cached = current_app.extensions.get("silk.openapi")
    if cached is None:
        cached = current_app.extensions["silk.openapi"] = document(list(catalogue().models))
    return jsonify(cached)
