"""API key material: generation, hashing and the display prefix; nothing else."""

import hashlib
import secrets

KEY_PREFIX = "sk-"


def generate_key() -> str:
    """Return a new key: `sk-` and 48 URL-safe random characters."""
    return KEY_PREFIX + secrets.token_urlsafe(36)


def hash_secret(secret: str) -> str:
    """Hash a high-entropy secret (key or code) for storage and lookup."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def display_prefix(secret: str) -> str:
    """The part of a secret that lists may show."""
    return secret[:10]


def generate_code(prefix: str) -> str:
    """Return a new redemption or invite code such as `silk-XXXX...`."""
    return f"{prefix}-{secrets.token_urlsafe(18)}"
