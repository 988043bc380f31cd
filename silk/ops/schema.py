"""Whether the database schema has every migration, so a forgotten `db upgrade` says so.

A database whose schema is behind the migrations (empty, or an older revision) answers
`SELECT 1` but fails every real statement; the gateway then answers 503 with one message
that names the fix, /readyz fails, and the `silk` commands print the same line. The
migrations' head is read once per process; the database's revision is read at start and
then on every request until it has caught up (a gateway in that state serves nothing else,
and the first request after `db upgrade` must succeed), then trusted for the process's
life: migrations only ever move forward under a running gateway.
"""

from __future__ import annotations

import ast
import functools
import logging
import os
import threading
import tokenize
from pathlib import Path

from flask import Flask, current_app, request
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

from silk.errors import ServiceUnavailable

log = logging.getLogger("silk.schema")

UPGRADE_COMMAND = "silk db upgrade"  # or `flask --app app db upgrade` in the project folder
# Endpoints that work without the schema: health, metrics, static files, public pages.
_EXEMPT = frozenset({"ops.healthz", "ops.readyz", "ops.prometheus_metrics", "static",
                     "openapi.openapi_json", "web.home"})


MIGRATIONS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "migrations")


@functools.cache
def _graph(directory: str) -> dict[str, tuple[str, ...]]:
    """Each migration's revision and the revisions it follows, read from the literal
    `revision` and `down_revision` of versions/*.py without importing alembic (and mako and
    pygments with it: 11 MB in every server process).

    A file alembic would load but whose revision is not a literal here raises ValueError,
    so the check never guesses a head.
    """
    graph: dict[str, tuple[str, ...]] = {}
    for path in sorted(Path(directory, "versions").glob("*.py")):
        if path.name.startswith(("_", ".")):  # __init__.py, editors' lock files: not loaded
            continue
        with tokenize.open(path) as source:  # honours a coding line, as Python does
            tree = ast.parse(source.read())
        values: dict[str, object] = {}
        for node in tree.body:
            if isinstance(node, ast.Assign):
                targets, value = node.targets, node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                targets, value = [node.target], node.value
            else:
                continue
            for target in targets:
                if isinstance(target, ast.Name) and target.id in ("revision", "down_revision"):
                    try:
                        values[target.id] = ast.literal_eval(value)
                    except ValueError:
                        raise ValueError(f"{path}: {target.id} is not a literal") from None
        revision, down = values.get("revision"), values.get("down_revision")
        if not isinstance(revision, str):
            raise ValueError(f"{path}: no literal revision string")
        follows = down if isinstance(down, (tuple, list)) else (down,) if down else ()
        graph[revision] = tuple(str(d) for d in follows)
    return graph


def _heads(graph: dict[str, tuple[str, ...]]) -> frozenset[str]:
    followed = {down for downs in graph.values() for down in downs}
    return frozenset(graph.keys() - followed)


def head_revisions(directory: str) -> frozenset[str]:
    """The revisions the migrations end at (one, unless a branch is left unmerged)."""
    return _heads(_graph(directory))


def known_revisions(directory: str) -> frozenset[str]:
    """Every revision the migrations know."""
    return frozenset(_graph(directory))


def database_revisions(engine: Engine) -> frozenset[str]:
    """The revisions stamped in the database's alembic_version (none on an empty one)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return frozenset()
        return frozenset(conn.scalars(text("SELECT version_num FROM alembic_version")))


def behind_message(current: frozenset[str], heads: frozenset[str]) -> str:
    """The one line every place shows for a schema that lacks migrations."""
    at = ", ".join(sorted(current)) or "empty"
    return (f"The database schema is not ready: it is behind the migrations (database at "
            f"{at}, migrations at {', '.join(sorted(heads))}). Run `{UPGRADE_COMMAND}` "
            "(or `flask --app app db upgrade` in the project folder).")


def pending(engine: Engine, heads: frozenset[str], known: frozenset[str]) -> str | None:
    """The message when the schema is behind the migrations (`heads`, of `known`
    revisions), else None.

    A revision the migrations do not know is a newer schema (a release being rolled out
    or back): the code in hand is not behind it, so it counts as ready.
    """
    current = database_revisions(engine)
    if current == heads or not current <= known:
        return None
    return behind_message(current, heads)


class SchemaState:
    """One process's view of its database's schema: ready for good once seen ready.

    The migrations are read once, here: a file it cannot read stops the start, loudly.
    """

    def __init__(self, directory: str):
        graph = _graph(directory)
        self.heads, self.known = _heads(graph), frozenset(graph)
        self.ready = False
        self.message: str | None = None
        self._lock = threading.Lock()

    def problem(self, engine: Engine) -> str | None:
        """The schema message, read again while not ready; None when ready or when the
        database cannot be asked (its own errors say so then)."""
        if self.ready:
            return None
        with self._lock:
            if self.ready:
                return None  # another request found it ready while this one waited
            try:
                message = pending(engine, self.heads, self.known)
            except Exception:  # noqa: BLE001 - unreachable: /readyz and the 503s say that
                log.debug("schema check failed", exc_info=True)
                return None
            self.message = message
            self.ready = message is None
        return message


def state(app: Flask) -> SchemaState:
    """The app's schema state."""
    return app.extensions["silk.schema"]


def problem() -> str | None:
    """The current app's schema message, or None."""
    from silk.extensions import db

    return state(current_app).problem(db.engine)


def install(app: Flask) -> None:
    """Answer 503 (in the surface's own envelope) while the schema is behind."""
    app.extensions["silk.schema"] = SchemaState(MIGRATIONS)

    @app.before_request
    def _schema_ready():
        if state(app).ready or request.endpoint in _EXEMPT:
            return
        message = problem()
        if message is not None:
            raise ServiceUnavailable(message, code="schema_not_ready")


def check_at_start(app: Flask, *, say: bool) -> None:
    """Read the schema's state before the first request needs it; with `say` (one process
    of the server), log that migrations are pending and how to apply them."""
    with app.app_context():
        message = problem()
    if message is not None and say:
        log.error(message)
