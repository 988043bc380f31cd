"""The OpenAPI document's component schemas: what each request and answer body looks like.

Kept apart from silk.openapi (the paths and the route) so each reads on one screen.
"""

from __future__ import annotations


def ref(name: str) -> dict:
    """A reference to a component schema."""
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: tuple[str, ...] = (), **properties) -> dict:
    """An object schema that lists what it promises and tolerates additions."""
    schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


def nullable(schema: dict) -> dict:
    """The schema, or null (OpenAPI 3.0 style)."""
    return {**schema, "nullable": True}


def listing(item: str) -> dict:
    """The OpenAI list shape: {"object": "list", "data": [...]}."""
    return obj(("object", "data"), object={"type": "string", "enum": ["list"]},
               data={"type": "array", "items": ref(item)})


STRING, INTEGER, NUMBER, BOOLEAN = ({"type": t} for t in ("string", "integer", "number",
                                                           "boolean"))
MOMENT = nullable({"type": "string", "format": "date-time"})
USD = {"type": "number", "description": "US dollars"}
SERVED = "Requests served: billed tokens (free quota included), however they ended."
FAILED = "Requests that failed and were charged nothing (not counted in requests)."
TOTALS = {"requests": {**INTEGER, "description": SERVED}, "prompt_tokens": INTEGER,
          "completion_tokens": INTEGER, "total_tokens": INTEGER, "cost": USD,
          "failed_requests": {**INTEGER, "description": FAILED}}


def optional_nullable(schema: dict) -> dict:
    """An object schema whose optional properties may be null, read as not given."""
    required = set(schema.get("required", ()))
    return {**schema, "properties": {
        name: value if name in required or value.get("nullable") else nullable(value)
        for name, value in schema["properties"].items()}}


LIMIT = {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
LIMITS = obj(rpm_limit=nullable(INTEGER), tpm_limit=nullable(INTEGER),
             concurrency_limit=nullable(INTEGER))


TIER_RATES = obj(max_prompt_tokens=nullable(INTEGER), input=USD, output=USD,
                 cache_hit_input=USD)
RATES = {"input": USD, "output": USD, "cache_hit_input": USD,
         "tiers": {"type": "array", "items": TIER_RATES}}
MARGIN = obj(("key", "requests", "revenue", "upstream_cost", "margin"), key=STRING,
             requests=INTEGER, revenue=USD, upstream_cost=USD, margin=USD)
SCHEMAS = {
    "Error": obj(("error",), error=obj(("message", "type", "param", "code"),
                                       message=STRING, type=STRING, param=nullable(STRING),
                                       code=nullable(STRING))),
    "Message": optional_nullable(obj(("role",), role={"type": "string", "enum": [
        "system", "user", "assistant", "tool", "function", "developer"]},
        content=nullable({"oneOf": [STRING, {"type": "array", "items": obj(
            ("type",), type=STRING, text=STRING)}]}), name=STRING, tool_call_id=STRING)),
    "ChatCompletionRequest": {**optional_nullable(obj(
        ("model", "messages"), model=STRING,
        messages={"type": "array", "minItems": 1, "items": ref("Message")},
        stream={"type": "boolean", "description": "Omitted: as Accept prefers "
                "(application/json or text/event-stream), else SILK_STREAM_DEFAULT "
                "(true unless the operator set false)."},
        stream_options=obj(include_usage=nullable(BOOLEAN)),
        temperature={"type": "number", "minimum": 0, "maximum": 2},
        top_p={"type": "number", "minimum": 0, "maximum": 1},
        max_tokens={"type": "integer", "minimum": 1},
        max_completion_tokens={"type": "integer", "minimum": 1},
        n={"type": "integer", "minimum": 1, "maximum": 16},
        presence_penalty={"type": "number", "minimum": -2, "maximum": 2},
        frequency_penalty={"type": "number", "minimum": -2, "maximum": 2},
        seed=INTEGER, stop=nullable({"oneOf": [STRING, {"type": "array", "items": STRING}]}),
        user=STRING, tools={"type": "array", "items": {"type": "object"}},
        response_format={"type": "object"}, reasoning_effort=STRING,
        thinking={"type": "object"})),
        "description": "OpenAI fields pass through to the provider; `model` is replaced by "
                       "the catalogue's upstream model. null for an optional field means "
                       "not given: it is not sent upstream. Only function tools run (a "
                       "provider's built-in tool is a 400)."},
    "ChatCompletion": obj(("id", "object", "model", "choices"), id=STRING,
                          object={"type": "string", "enum": ["chat.completion"]},
                          created=INTEGER, model=STRING,
                          choices={"type": "array", "items": {"type": "object"}},
                          usage=obj(prompt_tokens=INTEGER, completion_tokens=INTEGER,
                                    total_tokens=INTEGER, cost=USD)),
    "ResponseRequest": {**obj(
        ("model", "input"), model=STRING,
        input={"oneOf": [STRING, {"type": "array", "items": {"type": "object"}}]},
        instructions=nullable(STRING), stream=BOOLEAN, store=nullable(BOOLEAN),
        previous_response_id=nullable(STRING),
        tools=nullable({"type": "array", "items": {"type": "object"}}),
        tool_choice=nullable({"oneOf": [STRING, {"type": "object"}]}),
        parallel_tool_calls=nullable(BOOLEAN),
        max_output_tokens=nullable({"type": "integer", "minimum": 1}),
        temperature=nullable({"type": "number", "minimum": 0, "maximum": 2}),
        top_p=nullable({"type": "number", "minimum": 0, "maximum": 1}),
        reasoning=nullable({"type": "object"}), text=nullable({"type": "object"}),
        metadata=nullable({"type": "object"})),
        "description": "Translated to chat completions for the model's provider; only "
                       "function tools run (a built-in tool is a 400)."},
    "Response": obj(("id", "object", "status", "model", "output"), id=STRING,
                    object={"type": "string", "enum": ["response"]}, created_at=NUMBER,
                    status=STRING, model=STRING,
                    output={"type": "array", "items": {"type": "object"}},
                    usage=nullable(obj(input_tokens=INTEGER, output_tokens=INTEGER,
                                       total_tokens=INTEGER, cost=USD))),
    "ResponseDeleted": obj(("id", "object", "deleted"), id=STRING,
                           object={"type": "string", "enum": ["response"]},
                           deleted=BOOLEAN),
    "ResponseItemList": obj(("object", "data", "has_more"),
                            object={"type": "string", "enum": ["list"]},
                            data={"type": "array", "items": {"type": "object"}},
                            first_id=nullable(STRING), last_id=nullable(STRING),
                            has_more=BOOLEAN),
    "Model": obj(("id", "object"), id=STRING, object={"type": "string", "enum": ["model"]},
                 created=INTEGER, owned_by=STRING),
    "Pricing": obj(("currency", "models", "tiers"), currency=STRING,
                   models={"type": "array", "items": obj(
                       ("id", "provider", "input", "output"), id=STRING, provider=STRING,
                       input=USD, output=USD, cache_hit_input=USD, unit=STRING,
                       available=BOOLEAN, time_zone=STRING,
                       holidays={"type": "array", "items": STRING},
                       bands={"type": "array", "items": obj(
                           name=STRING, days={"type": "array", "items": STRING},
                           hours=STRING, **RATES)},
                       tiers={"type": "array", "items": TIER_RATES},
                       versions={"type": "array", "items": obj(("from",), **{"from": STRING},
                                                               **RATES)})},
                   tiers={"type": "array", "items": obj(
                       ("name",), name=STRING, discount=NUMBER, discount_percent=NUMBER,
                       monthly_free_tokens=INTEGER)}),
    "Balance": obj(("balance", "currency"), balance=USD, currency=STRING),
    "UsageReport": obj(("month", "requests", "by_model", "by_day"), object=STRING,
                       month=STRING, currency=STRING, **TOTALS,
                       by_model={"type": "array", "items": obj(model=STRING, **TOTALS)},
                       by_day={"type": "array", "items": obj(date=STRING, **TOTALS)}),
    "Billing": obj(("month", "tier", "usage", "costs", "quota", "balance", "models"),
                   month=STRING, tier=STRING,
                   usage=obj(requests={**INTEGER, "description": SERVED},
                             totalTokens=INTEGER,
                             failedRequests={**INTEGER, "description": FAILED}),
                   costs=obj(subtotal=USD, discount=USD, total=USD),
                   quota=obj(free=INTEGER, used=INTEGER, remaining=INTEGER), balance=USD,
                   models={"type": "array", "description": "By model; each figure sums to "
                           "the top-level one.", "items": obj(
                               ("model", "requests", "failedRequests", "tokens", "subtotal",
                                "discount", "total"), model=STRING,
                               requests={**INTEGER, "description": SERVED},
                               failedRequests={**INTEGER, "description": FAILED},
                               tokens=INTEGER, subtotal=USD, discount=USD, total=USD)}),
    "TopupRequest": obj(amount={"oneOf": [NUMBER, STRING], "description": "USD, 2 decimals"},
                        code={"type": "string", "minLength": 1, "maxLength": 100},
                        account={"oneOf": [INTEGER, STRING],
                                 "description": "Admin keys only: the account to credit."},
                        note={"type": "string", "maxLength": 200}),
    "Topup": obj(("object", "credited", "balance"), object=STRING, account_id=INTEGER,
                 kind=STRING, credited=USD, balance=USD, currency=STRING,
                 transaction_id=INTEGER),
    "Key": obj(("id", "object", "prefix", "status"), id=INTEGER, object=STRING, name=STRING,
               prefix=STRING, status={"type": "string", "enum": ["active", "revoked",
                                                                  "expired"]},
               models=nullable({"type": "array", "items": STRING}),
               rpm_limit=nullable(INTEGER), tpm_limit=nullable(INTEGER),
               concurrency_limit=nullable(INTEGER),
               role={"type": "string", "enum": ["owner", "member"]},
               spend_caps=ref("SpendCaps"),
               spend=obj(("day", "month", "total", "held"), day=USD, month=USD, total=USD,
                         held={**USD, "description": "Held by the key's requests in flight; "
                               "the caps count it until they settle."}),
               created_at=MOMENT, expires_at=MOMENT, last_used_at=MOMENT, revoked_at=MOMENT,
               deleted=BOOLEAN),
    "SpendCaps": {**obj(day=nullable(USD), month=nullable(USD), total=nullable(USD)),
                  "description": "USD a key may spend per UTC day, per UTC month and in all "
                                 "(null or absent: no cap). A request whose worst case would "
                                 "pass a cap, with what was spent in its period and what the "
                                 "key's open requests hold, is refused with 402 "
                                 "key_budget_exceeded."},
    "KeyUpdate": obj(name={"type": "string", "minLength": 1, "maxLength": 100},
                     spend_caps={**ref("SpendCaps"), "description": "Caps sent replace those; "
                                 "null removes one, one left out stays."},
                     rpm_limit=nullable(LIMIT), tpm_limit=nullable(LIMIT),
                     concurrency_limit=nullable(LIMIT)),
    "NewKey": {"allOf": [ref("Key"), obj(("key",), key=STRING, message=STRING)]},
    "KeyCreate": obj(name={"type": "string", "minLength": 1, "maxLength": 100},
                     expires_at={"type": "string", "format": "date-time"},
                     expires_in_days={"type": "integer", "minimum": 1, "maximum": 3650},
                     models={"type": "array", "minItems": 1, "maxItems": 100,
                             "items": STRING},
                     rpm_limit={"type": "integer", "minimum": 1},
                     tpm_limit={"type": "integer", "minimum": 1},
                     concurrency_limit={"type": "integer", "minimum": 1},
                     role={"type": "string", "enum": ["owner", "member"],
                           "description": "owner (default) manages keys and sees the whole "
                                          "account; member uses the API and sees its own "
                                          "usage and caps."},
                     spend_caps={**ref("SpendCaps"), "description": "Never above the creating "
                                 "key's caps; a cap left out is the creating key's."}),
    "AlertSettings": obj(("object", "webhook_url", "email", "balance_threshold"),
                         object={"type": "string", "enum": ["alert_settings"]},
                         webhook_url=nullable(STRING), email=nullable(STRING),
                         balance_threshold=nullable(USD),
                         webhook_secret={**STRING, "description": (
                             "Signs each delivery (Silk-Signature); only in the answer "
                             "that set a new webhook_url.")},
                         message=STRING),
    "AlertSettingsUpdate": obj(
        webhook_url=nullable({"type": "string", "maxLength": 500, "description": (
            "Where events are POSTed, signed; http(s) to a public address.")}),
        email=nullable({"type": "string", "format": "email", "maxLength": 254}),
        balance_threshold=nullable({"oneOf": [NUMBER, STRING], "description": (
            "USD: the settlement that takes the balance under it sends one alert.")})),
    "AccountLimits": obj(("object", "model"), object=STRING,
                         model=nullable(STRING), rpm_limit=nullable(INTEGER),
                         tpm_limit=nullable(INTEGER), concurrency_limit=nullable(INTEGER),
                         updated_at=MOMENT),
    "AccountLimitList": obj(("object", "data", "defaults"), object=STRING,
                            data={"type": "array", "items": ref("AccountLimits")},
                            defaults=obj(key=LIMITS, account=LIMITS, account_model=LIMITS)),
    "AccountLimitsPatch": obj(
        model={"type": "string", "minLength": 1, "maxLength": 128,
               "description": "A catalogue model: the account's limits on it alone."},
        rpm_limit=nullable(LIMIT), tpm_limit=nullable(LIMIT),
        concurrency_limit=nullable(LIMIT)),
    "Account": obj(("id", "object", "email", "tier", "balance"), id=INTEGER, object=STRING,
                   email=STRING, tier=STRING, is_admin=BOOLEAN, disabled=BOOLEAN,
                   balance=USD, reserved=USD, currency=STRING, created_at=MOMENT,
                   keys={"type": "array", "items": ref("Key")}),
    "NewAccount": {"allOf": [ref("Account"), obj(("api_key",), api_key=STRING,
                                                 key=ref("Key"), message=STRING)]},
    "Register": obj(("email",), email={"type": "string", "format": "email",
                                       "maxLength": 254},
                    invite_code={"type": "string", "maxLength": 100}),
    "RegistrationMode": obj(("registration",), registration={
        "type": "string", "enum": ["open", "invite", "closed"]},
        invite_code_required=BOOLEAN, page=STRING),
    "AccountCreate": obj(("email",), email={"type": "string", "format": "email"},
                         tier=STRING, credit={"oneOf": [NUMBER, STRING]}, admin=BOOLEAN),
    "AccountPatch": obj(tier=STRING, disabled=BOOLEAN),
    "Credit": obj(("amount",), amount={"oneOf": [NUMBER, STRING]},
                  kind={"type": "string", "enum": ["topup", "refund", "adjustment"]},
                  note={"type": "string", "maxLength": 200}),
    "LedgerEntry": obj(("id", "kind", "amount", "balance_after"), id=INTEGER, kind=STRING,
                       amount=USD, balance_after=USD, request_id=nullable(STRING),
                       note=STRING, actor=STRING, created_at=MOMENT),
    "CodeIssue": obj(("amount",), amount={"oneOf": [NUMBER, STRING]}, count=INTEGER,
                     expires_at={"type": "string", "format": "date-time"}, note=STRING),
    "Code": obj(("id", "prefix", "amount", "state"), id=INTEGER, prefix=STRING, amount=USD,
                state=STRING, note=STRING, created_at=MOMENT, expires_at=MOMENT,
                redeemed_at=MOMENT, redeemed_by=nullable(INTEGER),
                code={"type": "string", "description": "Only when issued; never again."}),
    "InviteIssue": obj(count=INTEGER, uses=INTEGER, tier=STRING,
                       expires_at={"type": "string", "format": "date-time"}, note=STRING),
    "Invite": obj(("id", "prefix", "uses_left"), id=INTEGER, prefix=STRING,
                  uses_left=INTEGER, tier=nullable(STRING), note=STRING, created_at=MOMENT,
                  expires_at=MOMENT, code={"type": "string",
                                           "description": "Only when issued; never again."}),
    "Tier": obj(("name", "discount_percent", "monthly_free_tokens"), name=STRING,
                discount_percent=NUMBER, monthly_free_tokens=INTEGER),
    "TierInput": obj(("discount_percent", "monthly_free_tokens"),
                     discount_percent={"oneOf": [NUMBER, STRING]},
                     monthly_free_tokens={"type": "integer", "minimum": 0}),
    "AdminUsage": obj(("month", "by_account", "by_model", "by_day"), object=STRING,
                      month=STRING, currency=STRING,
                      by_account={"type": "array", "items": obj(account=STRING, **TOTALS)},
                      by_model={"type": "array", "items": obj(model=STRING, **TOTALS)},
                      by_day={"type": "array", "items": obj(date=STRING, **TOTALS)}),
    "Margin": obj(("month", "by", "data", "total", "below_cost"), object=STRING, month=STRING,
                  by=STRING, currency=STRING, data={"type": "array", "items": MARGIN},
                  total=MARGIN, below_cost={"type": "array", "items": obj(
                      ("model", "rates"), model=STRING,
                      rates={"type": "array", "items": STRING})}),
    "Providers": obj(("routes", "keys"), object=STRING, routes={"type": "array", "items": obj(
        ("model", "route", "provider", "state"), model=STRING, route=STRING, provider=STRING,
        upstream=STRING, weight=INTEGER, state=STRING, resting_until=MOMENT,
        failures=INTEGER, recent_failures=INTEGER,
        latency_ms=obj(p50=nullable(NUMBER), p90=nullable(NUMBER), p99=nullable(NUMBER)))},
        keys={"type": "array", "items": obj(("provider", "key", "state"), provider=STRING,
                                            key=STRING, state=STRING, resting_until=MOMENT)}),
    "Audit": obj(("ok", "problems"), ok=BOOLEAN, problems={"type": "array", "items": STRING}),
    "Status": obj(("status",), status=STRING, database=STRING),
    "AnthropicError": obj(("type", "error"), type={"type": "string", "enum": ["error"]},
                          error=obj(("type", "message"), type=STRING, message=STRING),
                          request_id=nullable(STRING)),
    "MessageRequest": {**obj(
        ("model", "max_tokens", "messages"), model=STRING,
        max_tokens={"type": "integer", "minimum": 1},
        messages={"type": "array", "minItems": 1, "items": obj(
            ("role", "content"), role={"type": "string", "enum": ["user", "assistant",
                                                                   "system"]},
            content={"oneOf": [STRING, {"type": "array", "items": obj(
                ("type",), type=STRING)}]})},
        system={"oneOf": [STRING, {"type": "array", "items": obj(
            ("type", "text"), type={"type": "string", "enum": ["text"]}, text=STRING)}]},
        stream=BOOLEAN, temperature={"type": "number", "minimum": 0, "maximum": 1},
        top_p={"type": "number", "minimum": 0, "maximum": 1},
        top_k={"type": "integer", "minimum": 0},
        stop_sequences={"type": "array", "items": STRING}, metadata={"type": "object"},
        tools={"type": "array", "items": obj(("name",), name=STRING,
                                             input_schema={"type": "object"})},
        tool_choice=obj(("type",), type={"type": "string", "enum": [
            "auto", "any", "tool", "none"]}, name=STRING),
        thinking=obj(("type",), type={"type": "string", "enum": [
            "enabled", "adaptive", "disabled"]}, budget_tokens={"type": "integer",
                                                                "minimum": 1})),
        "description": "Anthropic Messages. Sent as it came to a provider with an Anthropic "
                       "endpoint, else translated to chat completions; a max_tokens above "
                       "the model's maximum is lowered to it; a document the request does "
                       "not hold as text (a PDF, or one by URL or file id) is replaced by a "
                       "note saying it was left out."},
    "MessageCountRequest": obj(("model", "messages"), model=STRING,
                               messages={"type": "array", "minItems": 1,
                                         "items": {"type": "object"}}),
    "AnthropicMessage": obj(("id", "type", "role", "model", "content"), id=STRING,
                    type={"type": "string", "enum": ["message"]}, role=STRING, model=STRING,
                    content={"type": "array", "items": {"type": "object"}},
                    stop_reason=nullable(STRING), stop_sequence=nullable(STRING),
                    usage=obj(input_tokens=INTEGER, output_tokens=INTEGER,
                              cache_read_input_tokens=INTEGER, cost=USD)),
    "TokenCount": obj(("input_tokens",), input_tokens=INTEGER),
}
