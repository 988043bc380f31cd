"""Fixtures for reliability tests: a PostgreSQL database, a clean Redis, running gateways."""

from __future__ import annotations

import contextlib
import os

import pytest

from tests.support import databases

REDIS_URL = os.environ.get("SILK_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


@pytest.fixture(scope="session")
def pg_url():
    """A PostgreSQL database of its own: scale-out and restarts are production questions."""
    name = f"silk_reliability_{os.getpid()}"
    url = databases.postgres_database(name)
    yield url
    with contextlib.suppress(Exception):  # a leftover scratch database harms nobody
        databases.drop_postgres_database(name)


@pytest.fixture
def redis_url():
    """A Redis database emptied for this test, so no counter survives from another test."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL).flushdb()
    except redis.RedisError as exc:
        pytest.skip(f"Redis not reachable: {exc}")
    return REDIS_URL
