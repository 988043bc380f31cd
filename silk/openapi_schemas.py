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
TOTALS = {"requests": INTEGER, "prompt_tokens": INTEGER, "completion_tokens": INTEGER,
          "total_tokens": INTEGER, "cost": USD}

SCHEMAS = {
    "Error": obj(("error",), error=obj(("message", "type", "param", "code"),
                                       message=STRING, type=STRING, param=nullable(STRING),
                                       code=nullable(STRING))),
    "Message": {**obj(("role",), role={"type": "string", "enum": [
        "system", "user", "assistant", "tool", "function", "developer"]},
        content=nullable({"oneOf": [STRING, {"type": "array", "items": obj(
            ("type",), type=STRING, text=STRING)}]}), name=STRING, tool_call_id=STRING)},
    "ChatCompletionRequest": {**obj(
        ("model", "messages"), model=STRING,
        messages={"type": "array", "minItems": 1, "items": ref("Message")},
        stream={"type": "boolean", "description": "Default true; false, or omitted with "
                "Accept: application/json, answers one JSON object."},
        stream_options=nullable(obj(include_usage=BOOLEAN)),
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
        thinking={"type": "object"}),
        "description": "OpenAI fields pass through to the provider; `model` is replaced by "
                       "the catalogue's upstream model."},
    "ChatCompletion": obj(("id", "object", "model", "choices"), id=STRING,
                          object={"type": "string", "enum": ["chat.completion"]},
                          created=INTEGER, model=STRING,
                          choices={"type": "array", "items": {"type": "object"}},
                          usage=obj(prompt_tokens=INTEGER, completion_tokens=INTEGER,
                                    total_tokens=INTEGER, cost=USD)),
    "Model": obj(("id", "object"), id=STRING, object={"type": "string", "enum": ["model"]},
                 created=INTEGER, owned_by=STRING),
    "Pricing": obj(("currency", "models", "tiers"), currency=STRING,
                   models={"type": "array", "items": obj(
                       ("id", "provider", "input", "output"), id=STRING, provider=STRING,
                       input=USD, output=USD, cache_hit_input=USD, unit=STRING)},
                   tiers={"type": "array", "items": obj(
                       ("name",), name=STRING, discount=NUMBER, discount_percent=NUMBER,
                       monthly_free_tokens=INTEGER)}),
    "Balance": obj(("balance", "currency"), balance=USD, currency=STRING),
    "UsageReport": obj(("month", "requests", "by_model", "by_day"), object=STRING,
                       month=STRING, currency=STRING, **TOTALS,
                       by_model={"type": "array", "items": obj(model=STRING, **TOTALS)},
                       by_day={"type": "array", "items": obj(date=STRING, **TOTALS)}),
    "Billing": obj(("month", "tier", "usage", "costs", "quota", "balance"), month=STRING,
                   tier=STRING, usage=obj(requests=INTEGER, totalTokens=INTEGER),
                   costs=obj(subtotal=USD, discount=USD, total=USD),
                   quota=obj(free=INTEGER, used=INTEGER, remaining=INTEGER), balance=USD),
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
               rpm_limit=nullable(INTEGER), tpm_limit=nullable(INTEGER), created_at=MOMENT,
               expires_at=MOMENT, last_used_at=MOMENT, revoked_at=MOMENT,
               deleted=BOOLEAN),
    "NewKey": {"allOf": [ref("Key"), obj(("key",), key=STRING, message=STRING)]},
    "KeyCreate": obj(name={"type": "string", "minLength": 1, "maxLength": 100},
                     expires_at={"type": "string", "format": "date-time"},
                     expires_in_days={"type": "integer", "minimum": 1, "maximum": 3650},
                     models={"type": "array", "minItems": 1, "maxItems": 100,
                             "items": STRING},
                     rpm_limit={"type": "integer", "minimum": 1},
                     tpm_limit={"type": "integer", "minimum": 1}),
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
    "AdminUsage": obj(("month", "by_account", "by_model"), object=STRING, month=STRING,
                      currency=STRING,
                      by_account={"type": "array", "items": obj(account=STRING, **TOTALS)},
                      by_model={"type": "array", "items": obj(model=STRING, **TOTALS)}),
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
        system={"oneOf": [STRING, {"type": "array", "items": obj(("type",), type=STRING)}]},
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
                       "the model's maximum is lowered to it."},
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
