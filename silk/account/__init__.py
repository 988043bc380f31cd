"""Accounts, API keys, authentication and registration."""
