"""Test support: databases, accounts, a gunicorn-run gateway."""
