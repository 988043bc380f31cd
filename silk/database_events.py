"""Engine tuning per backend: SQLite in WAL mode so readers never wait on the writer, and
every commit on disk before the caller goes on, but for a metering hold (until the next
charge's flush) and writes that are not money (a stored response, a key's last use)."""

from sqlalchemy import event
from sqlalchemy.engine import URL, Engine

SQLITE_BUSY_TIMEOUT_MS = 30000  # how long a writer outside metering waits for the lock


def sqlite_pragmas(dbapi_conn) -> None:
    """Apply the settings every SQLite connection of the app uses (shared with metering)."""
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit returns once the write-ahead log is flushed, so a charge or a credit
    # that was answered survives a power loss too (NORMAL would only survive a crash of the
    # process). Metering's holds opt out per transaction (silk.metering.sqlite), as do the
    # writes that are not money (silk.sqlite_writes.write_begin).
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def sqlite_in_memory(url: URL) -> bool:
    """Whether a SQLite URL names an in-memory database (only its own connection sees it)."""
    database = url.database or ""
    return database in ("", ":memory:") or "mode=memory" in database \
        or url.query.get("mode") == "memory"


def install_engine_events(engine: Engine) -> None:
    """Attach connection settings that the URL alone cannot express."""
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn, _record):
        sqlite_pragmas(dbapi_conn)
