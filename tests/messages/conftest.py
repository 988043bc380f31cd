"""Fixtures for the Messages surface: the native path (providers' Anthropic endpoints)."""

import pytest


@pytest.fixture
def native(monkeypatch, upstream):
    """Every provider serves Anthropic Messages at the fake; ask for it before `app`."""
    for provider, prefix in (("deepseek", "DEEPSEEK"), ("ark", "ARK"), ("mimo", "MIMO")):
        monkeypatch.setenv(f"{prefix}_ANTHROPIC_BASE_URL", upstream.anthropic_base_url(provider))
    return upstream


@pytest.fixture
def native_gateway(gateway_env, upstream):
    """The gunicorn gateway's providers serve Anthropic Messages; ask for it before
    `gateway`."""
    for provider, prefix in (("deepseek", "DEEPSEEK"), ("ark", "ARK"), ("mimo", "MIMO")):
        gateway_env[f"{prefix}_ANTHROPIC_BASE_URL"] = upstream.anthropic_base_url(provider)
    return upstream
