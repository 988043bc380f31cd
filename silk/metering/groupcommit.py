"""Group commit: the operations that arrive while a batch is being written go in the next one.

One account's row takes every request's hold and charge, so on PostgreSQL its row lock and
a WAL flush per statement set the pace: about 3,000 statements a second, whatever the
number of workers. Here the first caller to find no batch in flight leads: it writes its
own operation and everything queued behind it in one transaction (one round trip, one
commit), hands each caller its own result, then passes the lead to the oldest waiter. A
lone request waits for nobody; under load a commit carries dozens of requests.

Pure concurrency, no database: the batch runner is given. It uses `threading`'s lock and
event, which gevent patches into greenlet primitives under gunicorn, unless told otherwise.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

BatchItem = TypeVar("BatchItem")

# A batch runner gets the operations and returns one result per operation, in order; an
# exception in the list is raised to that operation's caller alone.
BatchRunner = Callable[[Sequence[BatchItem]], Sequence[Any]]


class BatchInterrupted(Exception):
    """The leader was killed while writing the batch: whether it committed is unknown."""


class _Slot(Generic[BatchItem]):
    """One caller's operation, and how it learns its result or that it leads next."""

    __slots__ = ("op", "ready", "lead", "result")

    def __init__(self, op: BatchItem, ready: Any) -> None:
        self.op = op
        self.ready = ready
        self.lead = False
        self.result: Any = None


class GroupCommit(Generic[BatchItem]):
    """Run operations through `run_batch`, many to a batch, one batch at a time."""

    def __init__(self, run_batch: BatchRunner[BatchItem], max_batch: int = 64, *,
                 lock: Callable[[], Any] = threading.Lock,
                 event: Callable[[], Any] = threading.Event) -> None:
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._event = event
        self._mutex = lock()
        self._queue: list[_Slot[BatchItem]] = []
        self._busy = False

    def submit(self, op: BatchItem) -> Any:
        """Run `op` in the next batch and return its result (or raise its exception)."""
        slot = _Slot(op, self._event())
        with self._mutex:
            self._queue.append(slot)
            leads = not self._busy
            self._busy = True
        if not leads:
            try:
                slot.ready.wait()
            except BaseException:
                self._withdraw(slot)
                raise
            leads = slot.lead  # the previous leader passed the lead: our op heads the queue
        if leads:
            self._lead()
        if isinstance(slot.result, BaseException):
            raise slot.result
        return slot.result

    def _withdraw(self, slot: _Slot[BatchItem]) -> None:
        """A waiter was killed: drop its op if not yet taken, and pass on a lead it was given."""
        with self._mutex:
            if slot in self._queue:
                self._queue.remove(slot)
            if slot.lead:
                self._pass_lead()

    def _pass_lead(self) -> None:
        """With the mutex held: the oldest waiter leads next, or no batch is in flight."""
        following = self._queue[0] if self._queue else None
        self._busy = following is not None
        if following is not None:
            following.lead = True
            following.ready.set()

    def _lead(self) -> None:
        """Write one batch from the head of the queue, then pass the lead or give it up."""
        with self._mutex:
            batch = self._queue[:self._max_batch]
            del self._queue[:self._max_batch]
        interrupted: BaseException | None = None
        try:
            results = list(self._run_batch([slot.op for slot in batch]))
            if len(results) != len(batch):
                raise RuntimeError("batch runner returned the wrong number of results")
        except Exception as exc:  # noqa: BLE001 - each caller of the batch gets it
            results = [exc] * len(batch)
        except BaseException as exc:  # killed: tell the waiters, pass the lead, then die
            results = [BatchInterrupted(repr(exc))] * len(batch)
            interrupted = exc
        with self._mutex:
            self._pass_lead()
        for slot, result in zip(batch, results, strict=True):
            slot.result = result
            slot.ready.set()
        if interrupted is not None:
            raise interrupted
