"""A Flask app whose views and hooks are all plain functions, checked once instead of per call.

Flask asks of every view, hook and teardown it calls whether it is a coroutine function
(`ensure_sync`), seven times a request here. gevent runs this gateway's code, and none of
it is `async def`: `check` makes sure of that once the app is built, so each call goes
straight through.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from inspect import iscoroutinefunction
from typing import Any

from flask import Flask


class SyncFlask(Flask):
    """Flask without the per-call coroutine check (see `check`)."""

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        return func


def check(app: Flask) -> None:
    """Refuse to build an app with an `async def` view, hook or error handler."""
    found = sorted({getattr(func, "__qualname__", repr(func))
                    for func in _callables(app) if iscoroutinefunction(func)})
    if found:
        raise TypeError("async views and hooks are not served by this gateway (gevent runs "
                        f"plain functions): {', '.join(found)}")


def _callables(app: Flask) -> Iterator[Callable[..., Any]]:
    """Everything Flask passes through `ensure_sync`."""
    yield from app.view_functions.values()
    for registry in (app.before_request_funcs, app.after_request_funcs,
                     app.teardown_request_funcs, app.template_context_processors):
        for funcs in registry.values():
            yield from funcs
    yield from app.teardown_appcontext_funcs
    for by_code in app.error_handler_spec.values():
        for handlers in by_code.values():
            yield from handlers.values()
