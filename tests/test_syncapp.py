"""The app takes its views and hooks as plain functions, so it refuses any `async def`."""

from __future__ import annotations

import pytest

from silk.syncapp import check


def test_the_gateway_is_built_of_plain_functions(app):
    assert app.ensure_sync(check) is check  # no per-call inspection
    check(app)  # create_app ran it too: nothing async


def test_an_async_view_is_refused(app):
    async def late_view():
        return "never"

    app.add_url_rule("/late", view_func=late_view)
    with pytest.raises(TypeError, match="late_view"):
        check(app)


@pytest.mark.parametrize("register", ["before_request", "after_request", "teardown_request",
                                      "teardown_appcontext"])
def test_an_async_hook_is_refused(app, register):
    async def late_hook(*_args):
        return None

    getattr(app, register)(late_hook)
    try:
        with pytest.raises(TypeError, match="late_hook"):
            check(app)
    finally:  # the app's own teardown would call it
        registry = getattr(app, f"{register}_funcs")
        (registry if isinstance(registry, list) else registry[None]).remove(late_hook)


def test_an_async_error_handler_is_refused(app):
    async def late_handler(_error):
        return "never", 418

    app.register_error_handler(LookupError, late_handler)
    with pytest.raises(TypeError, match="late_handler"):
        check(app)
