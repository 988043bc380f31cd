"""Fixtures for operations tests: captured request logs."""

from __future__ import annotations

import logging

import pytest

from tests.ops.helpers import LogLines


@pytest.fixture
def log_lines(app):
    """The JSON lines the `silk` loggers write during the test."""
    handler = LogLines()
    logger = logging.getLogger("silk")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.setLevel(previous)
    logger.removeHandler(handler)


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture
def browser():
    """Debian's headless Chromium driven by Playwright; skips where either is missing.

    Per test, not per session: Playwright's sync API keeps an asyncio loop running on this
    thread while it is open, which would break later tests that call asyncio.run().
    """
    import os

    if not os.path.exists(CHROMIUM):
        pytest.skip("chromium is not installed (.ci/install-system-deps installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    """A fresh browser context and page at a desktop size."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    yield tab
    context.close()


@pytest.fixture
def sqlite_only(backend):
    """Proxy and browser behaviour does not depend on the database: run them once."""
    if backend != "sqlite":
        pytest.skip("runs on SQLite only; the database is not what it tests")
