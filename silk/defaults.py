"""Package defaults: the seed document's model table, its tiers, and safe operating limits."""

PROVIDERS = {
    "deepseek": {"name": "DeepSeek", "base_url": "https://api.deepseek.com", "env": "DEEPSEEK"},
    "ark": {"name": "Volcengine", "base_url": "https://ark.cn-beijing.volces.com/api/v3",
            "env": "ARK"},
    "mimo": {"name": "Xiaomi", "base_url": "https://api.xiaomimimo.com/v1", "env": "MIMO"},
}

# Public id -> route and price (USD per million tokens). `extra_body` is merged into the
# upstream request; `max_output_tokens` bounds the reservation and is sent upstream as
# `max_tokens` when the client sets no limit, so the bound is real; `reasoning_budget` adds
# the thinking tokens a reasoning model may spend beyond `max_tokens`.
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
        "reasoning_budget": 32768,
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
    JSON_SORT_KEYS = False

    SILK_PROVIDERS = PROVIDERS
    SILK_MODELS = MODELS
    SILK_TIERS = TIERS
    SILK_DEFAULT_TIER = "free"

    SILK_DB_POOL_SIZE = 8  # PostgreSQL connections each worker keeps
    SILK_DB_MAX_OVERFLOW = 8  # extra connections a worker may open under a burst

    SILK_UPSTREAM_CONNECT_TIMEOUT = 5.0  # seconds to open a connection to a provider
    SILK_UPSTREAM_READ_TIMEOUT = 300.0  # seconds of silence before a provider counts as hung
    SILK_UPSTREAM_POOL_SIZE = 1000  # pooled connections per provider and worker
    SILK_KEY_COOLDOWN = 30.0  # seconds a failing upstream key rests
    SILK_IMAGE_TOKEN_ALLOWANCE = 6000  # tokens reserved per image part of a prompt
    # Seconds of lease on a hold: its worker renews it every third of this while the request
    # runs, so only a hold whose worker stopped (killed, or cut off from the database)
    # outlives it, and the sweep then settles it at the prompt estimate. Short enough that
    # a killed worker's holds come back quickly, long enough to ride out a database hiccup.
    SILK_RESERVATION_TTL = 120
    SILK_SWEEP_INTERVAL = 30.0  # seconds between sweeps in each worker
    # Where a worker keeps settlements the database could not take (fsync'd, one file per
    # worker) until they are written; <instance>/journal when unset. Every gateway process
    # of one database must see the same directory to adopt a stopped worker's journal.
    SILK_SETTLEMENT_JOURNAL_DIR = ""
    SILK_KEY_CACHE_TTL = 10.0  # seconds an API key lookup is trusted without the database

    SILK_AUTH_FAILURES_PER_MINUTE = 30  # failed key checks per client address, then 429
    SILK_DEFAULT_RPM = None  # per-key requests per minute when the key sets none
    SILK_DEFAULT_TPM = None  # per-key tokens per minute when the key sets none

    SILK_TOPUP_MAX = "10000"  # USD; the most one top-up may add
    SILK_OPEN_TOPUP = False  # let a plain key add funds by amount alone
    SILK_REGISTRATION = "invite"  # open | invite | closed
    SILK_REGISTRATION_PER_HOUR = 10  # registrations per client address per hour
