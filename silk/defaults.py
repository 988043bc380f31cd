"""Package defaults: the seed document's model table, its tiers, and safe operating limits."""

# Each provider's output limit is data: `limit_field` is the one request field the provider
# obeys as its output bound (the gateway sends exactly it, set to the bound it reserved
# against), `limit_covers_reasoning` whether that bound includes the chain of thought,
# `thinking_off` the body that switches thinking off where the bound does not cover it, and
# `budget_field` where the provider reads a number of thinking tokens (a key, or a dotted
# path into objects: `thinking.budget_tokens` as Anthropic's dialect, `reasoning.max_tokens`
# on OpenRouter, `thinking_budget` on DashScope, `chat_template_kwargs.thinking_budget` on
# SGLang, `nvext.max_thinking_tokens` on NVIDIA NIM, `extra_body.google.thinking_config.
# thinking_budget` on Gemini's OpenAI endpoint; null: none). Where the bound leaves thinking
# out, the gateway writes a model's reasoning_budget there in every request, so the provider
# thinks no more than the hold covers; without one such a model cannot be configured.
# `reasoning_streamed` says whether the provider streams the chain of thought it bills
# (`reasoning_content`): one that does not (OpenAI's o-series, Gemini's OpenAI API) reports
# it only in the final usage, so a stream whose client leaves is read to that usage
# (silk.relay.stream) rather than billed from the delivered text alone.
# What the providers document:
# - DeepSeek: `max_tokens` bounds the whole answer, chain of thought included (thinking
#   mode); `max_completion_tokens` is not read. `thinking` {enabled|disabled}; no budget key.
# - Volcengine Ark: `max_tokens` bounds the answer only, not the chain of thought;
#   `max_completion_tokens` bounds answer plus chain of thought, and when it is set
#   `max_tokens` is ignored (the two are mutually exclusive). `thinking`
#   {enabled|disabled|auto}; `reasoning_effort` from minimal (no thinking) to high; no key
#   takes a number of thinking tokens.
# - Xiaomi MiMo: its OpenAI-compatible bound is `max_completion_tokens`, thinking plus
#   answer; `thinking` {enabled|disabled}, on by default for mimo-v2.5 and mimo-v2.5-pro;
#   no budget key.
# All three bound the thinking with their limit, so none needs a budget_field.
PROVIDERS = {
    "deepseek": {"name": "DeepSeek", "base_url": "https://api.deepseek.com", "env": "DEEPSEEK",
                 "limit_field": "max_tokens", "limit_covers_reasoning": True,
                 "reasoning_streamed": True,
                 "thinking_off": {"thinking": {"type": "disabled"}}},
    "ark": {"name": "Volcengine", "base_url": "https://ark.cn-beijing.volces.com/api/v3",
            "env": "ARK", "limit_field": "max_completion_tokens",
            "limit_covers_reasoning": True, "reasoning_streamed": True,
            "thinking_off": {"thinking": {"type": "disabled"}}},
    "mimo": {"name": "Xiaomi", "base_url": "https://api.xiaomimimo.com/v1", "env": "MIMO",
             "limit_field": "max_completion_tokens", "limit_covers_reasoning": True,
             "reasoning_streamed": True, "thinking_off": {"thinking": {"type": "disabled"}}},
}
# A provider entry that leaves these out is taken at its most cautious: its reasoning is
# taken as hidden, since a provider wrongly taken to stream it loses its reasoning's price
# uncounted when a client leaves, while one wrongly taken to hide it is only read to its
# end, and the client pays the provider's own count for the request, within its hold.
PROVIDER_LIMIT_DEFAULTS = {"limit_field": "max_tokens", "limit_covers_reasoning": False,
                           "reasoning_streamed": False,
                           "thinking_off": {"thinking": {"type": "disabled"}},
                           "budget_field": None}

# Public id -> route and price (USD per million tokens). `extra_body` is merged into the
# upstream request, the operator's word over the client's. `max_output_tokens` is the most
# a request may ask for; each request's bound is sent in its provider's `limit_field` and
# reserved against. `thinking: false` marks a model that cannot think. `reasoning_budget`
# matters only on a provider whose limit does not cover reasoning: there a route that
# enables thinking names the thinking tokens it may spend, which are reserved too and sent
# in the provider's `budget_field` (the route's extra_body may set a smaller number there,
# never a larger one); without a budget, thinking is switched off for every request.
MODELS = {
    "deepseek-chat": {
        "provider": "deepseek", "upstream": "deepseek-v4-flash",
        "extra_body": {"thinking": {"type": "disabled"}},
        "input": "0.14", "output": "0.28", "max_output_tokens": 8192, "context": 131072,
    },
    "deepseek-reasoner": {
        "provider": "deepseek", "upstream": "deepseek-v4-flash",
        "extra_body": {"thinking": {"type": "enabled"}},
        "input": "0.55", "output": "2.19", "max_output_tokens": 32768, "context": 131072,
    },
    "ark-code-latest": {
        "provider": "ark", "upstream": "ark-code-latest",
        "input": "0.11", "output": "0.43", "max_output_tokens": 32768, "context": 262144,
    },
    "doubao-seed-2.0-pro": {
        "provider": "ark", "upstream": "doubao-seed-2.0-pro",
        "input": "0.11", "output": "0.43", "max_output_tokens": 32768, "context": 262144,
    },
    "mimo-v2.5": {
        "provider": "mimo", "upstream": "mimo-v2.5",
        "input": "0.10", "output": "0.30", "max_output_tokens": 32768, "context": 262144,
    },
    "mimo-v2.5-pro": {
        "provider": "mimo", "upstream": "mimo-v2.5-pro",
        "input": "0.10", "output": "0.30", "max_output_tokens": 32768, "context": 262144,
    },
}

TIERS = {
    "free": {"discount_percent": "0", "monthly_free_tokens": 100_000},
    "pro": {"discount_percent": "10", "monthly_free_tokens": 1_000_000},
    "team": {"discount_percent": "20", "monthly_free_tokens": 5_000_000},
}


class Defaults:
    """Settings the operator may override in instance/silk.cfg or with SILK_* variables."""

    SECRET_KEY = None  # from the environment; a random one is made for development only
    SQLALCHEMY_DATABASE_URI = None  # DATABASE_URL; SQLite in instance/ when unset
    SQLALCHEMY_TRACK_MODIFICATIONS = False
    REDIS_URL = None
    MAX_CONTENT_LENGTH = 4 * 1024 * 1024  # bytes of request body
    SILK_BODY_READ_TIMEOUT = 30.0  # seconds a request body may take to arrive, then 408
    JSON_SORT_KEYS = False

    SILK_PROVIDERS = PROVIDERS
    SILK_MODELS = MODELS
    SILK_TIERS = TIERS
    SILK_DEFAULT_TIER = "free"
    # Other names for catalogue models, for every surface, billed as the model they name:
    # {"claude-opus-*": "deepseek-reasoner", "claude-*": "deepseek-chat"}; exact names
    # first, then glob patterns in order. The environment takes JSON or name=model pairs.
    SILK_MODEL_ALIASES: dict = {}
    SILK_LIST_ALIASES = False  # /v1/models shows the exact (non-pattern) aliases too

    SILK_DB_POOL_SIZE = 8  # PostgreSQL connections each worker keeps
    SILK_DB_MAX_OVERFLOW = 8  # extra connections a worker may open under a burst
    SILK_DB_CONNECT_TIMEOUT = 5.0  # seconds to open a PostgreSQL session (at least 2)
    # Seconds one PostgreSQL statement may run (0: no limit); metering also gives up on a
    # server that sends no answer for this long, and the request gets a retryable 503.
    SILK_DB_STATEMENT_TIMEOUT = 10.0

    SILK_UPSTREAM_CONNECT_TIMEOUT = 5.0  # seconds to open a connection to a provider
    SILK_UPSTREAM_READ_TIMEOUT = 300.0  # seconds of silence before a provider counts as hung
    # A JSON answer's first body byte may take the read timeout plus the output its hold
    # allows at this many tokens a second (a provider may send it only once it is complete),
    # at most SILK_UPSTREAM_MAX_ANSWER_WAIT seconds, counted from its first try: a key or
    # route it fails over to gets what is left; a stream waits the read timeout only.
    SILK_UPSTREAM_MIN_TOKENS_PER_SECOND = 10.0
    SILK_UPSTREAM_MAX_ANSWER_WAIT = 1800.0
    SILK_UPSTREAM_POOL_SIZE = 1000  # pooled connections per provider and worker
    # While a worker's event loop runs this many milliseconds late, each read of a stream
    # that has delivered output waits SILK_STREAM_PACE_MS (0: never) so that it carries
    # several events (silk.relay.pace).
    SILK_STREAM_PACE_WHEN_LATE_MS = 5.0
    SILK_STREAM_PACE_MS = 80.0
    SILK_SSE_MAX_EVENT = 8 * 1024 * 1024  # bytes of one upstream stream event; more is a cut
    SILK_KEY_COOLDOWN = 30.0  # seconds a failing upstream key rests
    # Seconds a provider's Retry-After may rest a key at most (above 0, at most a day).
    SILK_MAX_RETRY_AFTER = 300.0
    SILK_ROUTE_FAILURES = 3  # failures in a row before a model's route rests
    SILK_ROUTE_REST = 30.0  # seconds a failing route rests before one request probes it
    SILK_IMAGE_TOKEN_ALLOWANCE = 6000  # tokens reserved per image part of a prompt
    # A chat request without `stream` whose Accept prefers neither JSON nor an event stream
    # streams (the API document's default); false answers JSON, as OpenAI does.
    SILK_STREAM_DEFAULT = True
    # Seconds of lease on a hold: its worker renews it every third of this while the request
    # runs, so only a hold whose worker stopped (killed, or cut off from the database)
    # outlives it, and the sweep then settles it at the prompt estimate. Short enough that
    # a killed worker's holds come back quickly, long enough to ride out a database hiccup.
    SILK_RESERVATION_TTL = 120
    SILK_SWEEP_INTERVAL = 30.0  # seconds between sweeps in each worker
    # Days a stored response (Responses API, store: true) is kept; the sweep deletes it then.
    SILK_RESPONSES_RETENTION_DAYS = 30
    # Where a worker keeps settlements the database could not take (fsync'd, one file per
    # worker) until they are written; <instance>/journal when unset. Every gateway process
    # of one database must see the same directory to adopt a stopped worker's journal.
    SILK_SETTLEMENT_JOURNAL_DIR = ""
    SILK_KEY_CACHE_TTL = 10.0  # seconds an API key lookup is trusted without the database
    SILK_CONSOLE_SESSION_HOURS = 8.0  # an operator's console session lasts this long
    SILK_DASHBOARD_SESSION_HOURS = 12.0  # a dashboard session lasts this long
    # With REDIS_URL, revocations, account and tier changes are published here and reach
    # every worker at once; without Redis they take up to the caches' TTL.
    SILK_INVALIDATION_CHANNEL = "silk:invalidate"

    # Browser origins that may call /v1/* (comma-separated, or *); empty: no cross-origin use.
    SILK_CORS_ORIGINS = ""
    SILK_AUTH_FAILURES_PER_MINUTE = 30  # failed key checks per client address, then 429
    # Operator defaults for rate limits, per level, used where the key (or the operator, for
    # an account or an account and model) set none; None: no limit at that level.
    SILK_DEFAULT_RPM = None  # per-key requests per minute when the key sets none
    SILK_DEFAULT_TPM = None  # per-key tokens per minute when the key sets none
    SILK_DEFAULT_CONCURRENCY = None  # per-key requests at once when the key sets none
    SILK_ACCOUNT_RPM = None  # requests per minute per account, all its keys together
    SILK_ACCOUNT_TPM = None  # tokens per minute per account
    SILK_ACCOUNT_CONCURRENCY = None  # requests at once per account
    SILK_ACCOUNT_MODEL_RPM = None  # requests per minute per account on each model
    SILK_ACCOUNT_MODEL_TPM = None  # tokens per minute per account on each model
    SILK_ACCOUNT_MODEL_CONCURRENCY = None  # requests at once per account on each model
    # Seconds of lease on a concurrency slot held in Redis: renewed every third of it while
    # the request runs, so a killed worker's slots are free again within this time.
    SILK_CONCURRENCY_LEASE = 60.0

    # Alerts (silk.alerts): each worker delivers due events every SILK_ALERT_INTERVAL
    # seconds (0: this process delivers none), retrying a failed delivery after
    # SILK_ALERT_RETRY_BASE x 2^attempts seconds (at most an hour) until it has tried
    # SILK_ALERT_MAX_ATTEMPTS times. A worker claims an event for SILK_ALERT_LEASE seconds:
    # if it dies meanwhile, another delivers it after that.
    SILK_ALERT_INTERVAL = 5.0
    SILK_ALERT_RETRY_BASE = 30.0
    SILK_ALERT_MAX_ATTEMPTS = 12
    SILK_ALERT_LEASE = 60.0
    SILK_ALERT_TIMEOUT = 10.0  # seconds a webhook or the SMTP server may take to answer
    SILK_ALERT_BALANCE_USD = "0"  # balance alert threshold for accounts that set none (0: none)
    SILK_ALERT_KEY_EXPIRY_DAYS = 7  # alert when a key expires within this many days (0: never)
    # Days a delivered or given-up event stays in the outbox; each delivery round deletes a
    # batch of older ones (never fewer days than SILK_ALERT_KEY_EXPIRY_DAYS).
    SILK_ALERT_RETENTION_DAYS = 30
    # The operator's own alerts: every event of every account goes here too.
    SILK_ALERT_WEBHOOK_URL = ""
    SILK_ALERT_WEBHOOK_SECRET = ""  # signs the operator's webhook deliveries
    SILK_ALERT_EMAIL = ""
    # Webhooks to loopback, private, link-local or reserved addresses are refused unless
    # this is true (the gateway would otherwise post into its own network on request).
    SILK_ALERT_ALLOW_PRIVATE = False
    # E-mail through this SMTP server (none: no e-mail); security: starttls, ssl or none.
    SILK_SMTP_HOST = ""
    SILK_SMTP_PORT = 587
    SILK_SMTP_SECURITY = "starttls"
    SILK_SMTP_USER = ""
    SILK_SMTP_PASSWORD = ""
    SILK_SMTP_FROM = ""

    SILK_TOPUP_MAX = "10000"  # USD; the most one top-up may add
    SILK_OPEN_TOPUP = False  # let a plain key add funds by amount alone
    SILK_REGISTRATION = "invite"  # open | invite | closed
    SILK_REGISTRATION_PER_HOUR = 10  # registrations per client address per hour
