"""Settlements decided while the database was away, kept on local disk until written.

Each process appends to a file of its own in the journal directory, one JSON line per
settlement, fsync'd before the client is answered, and holds an flock on it while it lives:
a file whose lock can be taken belongs to a process that stopped, and any other process
of the same database adopts it (silk.metering.keeper). File names start with a digest of
the database's URL, so gateways of different databases may share a directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

log = logging.getLogger("silk.journal")

_directories: dict[str, str] = {}  # database digest -> journal directory


def database_digest(engine: Engine) -> str:
    """A short name for the engine's database, the same in every process that uses it."""
    url = engine.url.render_as_string(hide_password=True)
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def configure(engine: Engine, directory: str) -> None:
    """Say where journals of the engine's database are kept (set once per app)."""
    _directories[database_digest(engine)] = directory


def directory_of(engine: Engine) -> str | None:
    """Where the engine's journals are kept; None when no app configured one."""
    return _directories.get(database_digest(engine))


class Journal:
    """This process's journal file for one database, opened and locked on first use."""

    def __init__(self, directory: str, digest: str) -> None:
        self.directory = directory
        self.digest = digest
        self._fd: int | None = None
        self.path: str | None = None

    def append(self, entry: dict[str, Any]) -> None:
        """Add one entry durably (written and fsync'd when this returns)."""
        fd = self._fd if self._fd is not None else self._open()
        line = json.dumps(entry, separators=(",", ":")).encode() + b"\n"
        os.write(fd, line)
        os.fsync(fd)

    def discard(self) -> None:
        """Every entry is in the database: remove the file (a new one is made when needed)."""
        if self._fd is None or self.path is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd, self.path = None, None

    def _open(self) -> int:
        os.makedirs(self.directory, exist_ok=True)
        path = os.path.join(self.directory, f"{self.digest}-{secrets.token_hex(8)}.jsonl")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new name: nobody else has it
        _sync_directory(self.directory)
        self._fd, self.path = fd, path
        return fd


def _sync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Orphan:
    """A journal whose process stopped, locked by its adopter while it is replayed."""

    path: str
    fd: int
    entries: list[dict[str, Any]]

    def done(self) -> None:
        """Its entries are all in the database: remove it (if it is still the same file)."""
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                os.unlink(self.path)
        self.release()

    def release(self) -> None:
        """Let it go (to be tried again later, here or by another process)."""
        os.close(self.fd)


def orphans(directory: str, digest: str, own: str | None) -> Iterator[Orphan]:
    """The journals of this database whose owner is gone, each locked while it is handled."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return
    for name in names:
        path = os.path.join(directory, name)
        if not (name.startswith(digest + "-") and name.endswith(".jsonl")) or path == own:
            continue
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            continue  # adopted and removed meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)  # its owner lives, or another process is replaying it
            continue
        yield Orphan(path, fd, _entries(fd, path))


def _entries(fd: int, path: str) -> list[dict[str, Any]]:
    with os.fdopen(os.dup(fd), "rb") as file:
        lines = file.read().splitlines()
    entries = []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except ValueError:  # a line cut short by a crash was never acknowledged
            log.warning("unreadable journal line skipped", extra={"fields": {"path": path}})
    return entries
