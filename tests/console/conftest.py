"""Fixtures for the operator's console: the browser (from the ops tests), a signed-in page."""

from __future__ import annotations

import io
import re

import pytest

from tests.ops.conftest import browser, page, sqlite_only  # noqa: F401  (fixtures used here)


def screenshot_checks(png: bytes, *, width: int = 1280, min_height: int = 600) -> None:
    """A real page: the right size, and far from one flat colour."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.width == width and image.height >= min_height
    small = image.resize((image.width // 4, image.height // 4))
    colours = small.getcolors(maxcolors=1_000_000)
    assert colours is not None and len(colours) > 50
    commonest = max(count for count, _ in colours)
    assert commonest < 0.9 * small.width * small.height  # not blank


def sign_in(tab, gateway, key: str) -> None:
    """Sign the browser tab into the console with `key`."""
    tab.goto(gateway.url + "/admin/")
    assert tab.url.endswith("/admin/login")
    tab.fill("#api_key", key)
    tab.click("button[type=submit].primary")
    tab.wait_for_url(re.compile(r"/admin/accounts$"))


@pytest.fixture
def gateway_env(gateway_env):
    """Key look-ups trusted for a moment only, so that a key revoked on one worker is refused
    by the other at once (production leaves them 10 s, or shares revocations with Redis)."""
    return {**gateway_env, "SILK_KEY_CACHE_TTL": "0.001"}


@pytest.fixture
def books(runner):
    """`flask silk audit` as an operator runs it: returns (exit code, output)."""
    def run() -> tuple[int, str]:
        result = runner.invoke(args=["silk", "audit"])
        return result.exit_code, result.output

    return run
