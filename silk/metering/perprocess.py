"""One object per engine and process, for metering's own connections.

A gunicorn worker is a fork: a connection its parent opened must never be used in the child,
nor closed there (closing a PostgreSQL session sends its goodbye on the socket the parent
still uses). So each process makes its own object, keeps a parent's untouched, and closes
its own when the engine is disposed.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Engine

T = TypeVar("T")


class PerProcess(Generic[T]):
    """`get(engine)` makes an object with `make(engine)` once per process and engine."""

    def __init__(self, make: Callable[[Engine], T], close: Callable[[T], None]) -> None:
        self._make = make
        self._close = close
        self._made: weakref.WeakKeyDictionary[Engine, tuple[int, T]] = (
            weakref.WeakKeyDictionary())
        self._inherited: list[T] = []  # a parent's: never used nor closed here
        self._lock = threading.Lock()
        # The last answer, looked at first: a process meters one engine, and a weak
        # dictionary's lookup makes a weak reference on every call.
        self._last: tuple[weakref.ref[Engine], int, T] | None = None

    def get(self, engine: Engine) -> T:
        """This process's object for `engine`."""
        last = self._last
        if last is not None and last[0]() is engine and last[1] == os.getpid():
            return last[2]
        made = self._get(engine)
        self._last = (weakref.ref(engine), os.getpid(), made)
        return made

    def _get(self, engine: Engine) -> T:
        found = self._made.get(engine)
        if found is not None and found[0] == os.getpid():
            return found[1]
        with self._lock:
            found = self._made.get(engine)
            if found is not None and found[0] == os.getpid():
                return found[1]
            if found is not None:
                self._inherited.append(found[1])
            else:
                event.listen(engine, "engine_disposed", self._disposed)
            made = self._make(engine)
            self._made[engine] = (os.getpid(), made)
            return made

    def _disposed(self, engine: Engine) -> None:
        self._last = None
        found = self._made.get(engine)
        if found is not None and found[0] == os.getpid():
            self._close(found[1])
