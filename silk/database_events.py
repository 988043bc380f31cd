"""Engine tuning per backend: SQLite in WAL mode so readers never wait on the writer."""

from sqlalchemy import event
from sqlalchemy.engine import Engine


def install_engine_events(engine: Engine) -> None:
    """Attach connection settings that the URL alone cannot express."""
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn, _record):
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()
