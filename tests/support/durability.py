"""Which of the app's writes wait for the disk: the SQL its pool's connections run, seen
as SQLite traces it or as SQLAlchemy hands it to psycopg."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event
from sqlalchemy.engine import Engine

_LIGHT = {"sqlite": "PRAGMA synchronous = NORMAL",
          "postgresql": "SET LOCAL synchronous_commit = off"}
_DURABLE_AGAIN = "PRAGMA synchronous = FULL"


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    """The statements the engine's pooled connections run meanwhile, in order (on SQLite
    the driver's own too: the pragmas and BEGIN IMMEDIATE)."""
    seen: list[str] = []
    traced = []

    def trace(dbapi_connection, _record, _proxy):
        dbapi_connection.set_trace_callback(seen.append)
        traced.append(dbapi_connection)

    def statement(_conn, _cursor, sql, *_rest):
        seen.append(sql)

    sqlite = engine.dialect.name == "sqlite"
    hook, listener = ("checkout", trace) if sqlite else ("before_cursor_execute", statement)
    event.listen(engine, hook, listener)
    try:
        yield seen
    finally:
        event.remove(engine, hook, listener)
        for dbapi_connection in traced:
            dbapi_connection.set_trace_callback(None)


def committed_lightly(engine: Engine, seen: list[str], marker: str) -> bool:
    """Whether the one statement containing `marker` ran in a transaction that opted out of
    the flush, its connection made durable again afterwards (SQLite)."""
    [at] = [i for i, sql in enumerate(seen) if marker in sql]
    if engine.dialect.name == "postgresql":
        return seen[at - 1] == _LIGHT["postgresql"]  # SET LOCAL, then the write
    pragmas = [(i, sql) for i, sql in enumerate(seen) if sql.startswith("PRAGMA synchronous")]
    before = [sql for i, sql in pragmas if i < at]
    after = [sql for i, sql in pragmas if i > at]
    return bool(before) and before[-1] == _LIGHT["sqlite"] and after[:1] == [_DURABLE_AGAIN]
