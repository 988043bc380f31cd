"""Each process keeps its holds alive and its decided settlements on their way to the books.

A hold is owned by the process that made it. While its request runs, the owner renews its
lease (`expires_at`, SILK_RESERVATION_TTL ahead) every third of the lease, in one statement
for all its holds, so the sweep settles only holds whose owner stopped: killed, frozen or
cut off from the database. The registry keeps holds by weak reference: a request that is
gone without settling stops being renewed, and its hold is swept when the lease runs out.

The same loop writes the settlements this process had to journal while the database was
away, as soon as it answers and before renewing, and adopts the journals of processes that
stopped (silk.metering.journal). It is a thread, which under gunicorn's gevent worker is a
greenlet: every wait in it yields to the requests.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import defaultdict
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine

from silk.database import utcnow
from silk.errors import database_unavailable
from silk.metering import journal, store
from silk.metering.perprocess import PerProcess

if TYPE_CHECKING:
    from silk.metering.service import Decision, Hold

log = logging.getLogger("silk.keeper")

_ADOPT_EVERY = 30.0  # seconds between looks for journals of stopped processes
_RETRY_EVERY = 1.0  # seconds between tries to write journaled settlements
_RENEW_BATCH = 500  # reservation ids per renewal statement


class Keeper:
    """One process's live holds and journaled settlements for one database, and its loop."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.digest = journal.database_digest(engine)
        self.live: weakref.WeakValueDictionary[int, Hold] = weakref.WeakValueDictionary()
        # Journaled settlements by reservation, each with its hold: renewed until written.
        self.pending: dict[int, tuple[Decision, Hold | None]] = {}
        self.journal: journal.Journal | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._next_round = 0.0  # monotonic time the loop wakes up next
        self._adopt_at = 0.0

    def own(self, hold: Hold) -> None:
        """Keep a new hold alive until it is settled (or its request is gone)."""
        self.live[hold.reservation_id] = hold
        if hold.lease_seconds > 0 and (
                self._next_round > time.monotonic() + hold.lease_seconds / 3):
            self._wake.set()  # the loop sleeps longer than this lease allows
        self.start()

    def release(self, reservation_id: int) -> None:
        """A hold was settled (by anyone): stop renewing it."""
        self.live.pop(reservation_id, None)

    def keep(self, decision: Decision, hold: Hold | None) -> None:
        """Journal a settlement the database did not take; the loop writes it later."""
        directory = journal.directory_of(self.engine)
        with self._lock:
            self.pending[decision.reservation_id] = (decision, hold)
            try:
                if directory is None:
                    raise OSError("no journal directory is configured for this database")
                if self.journal is None:
                    self.journal = journal.Journal(directory, self.digest)
                self.journal.append(decision.to_json())
            except OSError:
                log.exception("settlement not journaled; kept in memory until written",
                              extra={"fields": {"reservation": decision.reservation_id}})
        self.start()
        self._wake.set()

    def start(self) -> None:
        """Start the loop in this process if it is not running."""
        if self._thread is not None or self._closed:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="silk-keeper",
                                                daemon=True)
                self._thread.start()

    def close(self) -> None:
        """Stop the loop (the engine was disposed); a journal left behind is adopted later."""
        self._closed = True
        self._wake.set()

    def replay(self) -> int:
        """Write this process's journaled settlements; how many are still waiting."""
        from silk.metering.service import write

        for reservation_id, (decision, _) in list(self.pending.items()):
            try:
                write(self.engine, decision)
            except Exception as exc:
                if database_unavailable(exc):
                    break  # still away: try again next round
                log.exception("journaled settlement failed; retried next round",
                              extra={"fields": {"reservation": reservation_id}})
                continue
            with self._lock:
                self.pending.pop(reservation_id, None)
        with self._lock:
            if not self.pending and self.journal is not None:
                self.journal.discard()
            return len(self.pending)

    def adopt(self) -> int:
        """Write the journals of this database's stopped processes; how many settlements."""
        from silk.metering.service import Decision, write

        directory = journal.directory_of(self.engine)
        if directory is None:
            return 0
        own = self.journal.path if self.journal else None
        count = 0
        for orphan in journal.orphans(directory, self.digest, own):
            try:
                for entry in orphan.entries:
                    if write(self.engine, Decision.from_json(entry)) is not None:
                        count += 1
            except Exception as exc:
                orphan.release()
                if database_unavailable(exc):
                    break
                log.exception("adopted journal failed; retried later",
                              extra={"fields": {"path": orphan.path}})
                continue
            orphan.done()
        if count:
            log.warning("wrote settlements journaled by a stopped process",
                        extra={"fields": {"count": count}})
        return count

    def renew(self) -> int:
        """Move the lease of every live hold forward, one statement per lease length."""
        ids = defaultdict(list)
        for hold in list(self.live.values()):
            if hold.lease_seconds > 0:
                ids[hold.lease_seconds].append(hold.reservation_id)
        for _, held in list(self.pending.values()):
            if held is not None and held.lease_seconds > 0:
                ids[held.lease_seconds].append(held.reservation_id)
        renewed = 0
        for lease, reservations in ids.items():
            expires = utcnow() + timedelta(seconds=lease)
            for start in range(0, len(reservations), _RENEW_BATCH):
                batch = sorted(set(reservations[start:start + _RENEW_BATCH]))
                renewed += store.of(self.engine).renew(batch, expires)
        return renewed

    def _pause(self) -> float:
        leases = [h.lease_seconds for h in list(self.live.values()) if h.lease_seconds > 0]
        pause = min(leases) / 3 if leases else _ADOPT_EVERY
        if self.pending:
            pause = min(pause, _RETRY_EVERY)
        return max(0.05, min(pause, self._adopt_at - time.monotonic()))

    def _run(self) -> None:
        down = False
        while not self._closed:
            self._wake.clear()
            failed = False
            try:
                # Settlements first: a hold journaled during an outage must be written
                # before its lease matters again.
                if self.pending:
                    self.replay()
                if time.monotonic() >= self._adopt_at:
                    self._adopt_at = time.monotonic() + _ADOPT_EVERY
                    self.adopt()
                self.renew()
                down = False
            except Exception as exc:  # noqa: BLE001 - the loop must outlive any round
                failed = True
                if not database_unavailable(exc):
                    log.exception("keeping holds failed; tried again next round")
                elif not down:
                    log.warning("database unavailable; holds are renewed when it answers")
                down = database_unavailable(exc)
            pause = self._pause()
            if failed:  # a missed renewal eats into the lease: try again soon
                pause = min(pause, _RETRY_EVERY)
            self._next_round = time.monotonic() + pause
            self._wake.wait(pause)


_keepers: PerProcess[Keeper] = PerProcess(Keeper, Keeper.close)


def of(engine: Engine) -> Keeper:
    """This process's keeper for `engine` (a forked worker makes its own)."""
    return _keepers.get(engine)
