"""End an open stream once its key is revoked, expires or its account is disabled, as a new
request would be refused.

A stream's key, hold and caps are checked when it begins; an operator who revokes a leaked
key expects the leak to stop, open streams included. Each open stream is registered here,
by key and account, in a per-process registry that holds it weakly (so it never holds more
than the streams open now). A stream is marked to check its key again:

* when silk.invalidation drops the key's or the account's cached lookup: at once in the
  process that made the change, and with REDIS_URL in every other worker within a round
  trip (on reconnecting, a subscriber marks every stream, as it may have missed a change);
* every half SILK_KEY_CACHE_TTL, by a timer that runs while streams are open. It bounds a
  change no message announced (no Redis, Redis away, a change made in the database): the
  key cache forgets it within the TTL, so such a stream ends within 1.5 x the TTL (15 s by
  default).

A stream is also marked when it is registered, as a change made after its request's key
check (while the provider was called) found no stream to mark, and at its key's expiry: the
timer wakes then if that comes before its next period (a key's expiry cannot be changed).

A marked stream checks before its next upstream read, through the key cache (a fresh entry
costs no query; a change dropped the entry). A key that no longer serves ends the stream
as `revoked`: the surface's failure event with code `key_revoked` or `account_disabled`,
what was delivered billed, the upstream closed. Where the provider hides its reasoning, the
client is sent nothing more and the upstream is read on to its usage, which is billed, so
that revoking one's own key mid-thought does not leave the thinking unpaid; such a stream
also checks after each read, so a mark made while it waited out the thinking keeps the
answer that read brought from the client. Between marks the relay pays one attribute
check per upstream read. A database that does not answer the check leaves the stream
running (it was admitted) until the next mark. An expired key ends its stream as `revoked`
too, with code `expired_api_key`; that needs no query.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from datetime import datetime, timedelta

from flask import Flask

from silk.account import auth
from silk.database import utcnow

log = logging.getLogger("silk.revocation")

_STATE = "silk.openstreams"
_SHORTEST = 0.25  # seconds: the timer's shortest period, whatever the TTL
_WARN_EVERY = 60.0  # seconds between warnings that the check could not reach the database

# Why a stream ended, by the code of silk.account.auth.why_refused: (reason, message, code).
ENDED = {
    "key_revoked": ("revoked", "This API key was revoked while the answer streamed.",
                    "key_revoked"),
    "account_disabled": ("revoked", "This API key's account was disabled while the answer "
                         "streamed.", "account_disabled"),
    "expired_api_key": ("revoked", "This API key expired while the answer streamed.",
                        "expired_api_key"),
}


class Watch:
    """One open stream's key and account; `check` is set when the key should be checked."""

    __slots__ = ("check", "key_hash", "key_id", "account_id", "expires_at", "_streams",
                 "__weakref__")

    def __init__(self, streams: OpenStreams | None, key_hash: str, key_id: int,
                 account_id: int, expires_at: datetime | None = None) -> None:
        self.check = False
        self.key_hash = key_hash
        self.key_id = key_id
        self.account_id = account_id
        self.expires_at = expires_at
        self._streams = streams

    def expired(self, now: datetime) -> bool:
        """True once the key's expiry has come."""
        return self.expires_at is not None and self.expires_at <= now

    def verdict(self) -> tuple[str, str, str] | None:
        """Check the key now: None while it serves, else how the stream ends."""
        self.check = False  # first: a mark made during the check is kept for the next read
        return None if self._streams is None else self._streams.verdict(self)

    def close(self) -> None:
        """The stream ended: stop watching it."""
        if self._streams is not None:
            self._streams.discard(self)


NOT_WATCHED = Watch(None, "", 0, 0)  # a stream no registry marks (no key to check)


class OpenStreams:
    """This process's open streams of one app, weakly held, and the timer that marks them."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.pid = os.getpid()
        self._open: weakref.WeakSet[Watch] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._timer: threading.Thread | None = None
        # Set when a stream opens whose key expires before the timer next wakes (at
        # _waking_at): only then, so a burst of such streams does not rescan them all.
        self._woken = threading.Event()
        self._waking_at: datetime | None = None
        self._warned_at = -_WARN_EVERY

    def watch(self, principal: auth.Principal) -> Watch:
        """Register a stream of `principal`'s key; the timer runs while any is open."""
        watch = Watch(self, principal.key_hash, principal.key_id, principal.account_id,
                      principal.expires_at)
        # The key was checked when the request began, but a change made since (while the
        # provider was called) marked no stream of it: the first read checks it. Unchanged,
        # the key cache's fresh entry answers without a query.
        watch.check = True
        with self._lock:
            self._open.add(watch)
            if watch.expires_at is not None and (self._waking_at is None
                                                 or watch.expires_at < self._waking_at):
                self._woken.set()
            if self._timer is None:
                self._timer = threading.Thread(target=self._run, name="silk-stream-watch",
                                               daemon=True)
                self._timer.start()
        return watch

    def discard(self, watch: Watch) -> None:
        with self._lock:
            self._open.discard(watch)

    def __len__(self) -> int:
        return len(self._open)

    def mark(self, *, key_hash: str | None = None, account_id: int | None = None) -> int:
        """Mark the open streams of a key or an account (neither: all); how many."""
        with self._lock:
            streams = list(self._open)
        marked = 0
        for watch in streams:
            if ((key_hash is None and account_id is None) or watch.key_hash == key_hash
                    or watch.account_id == account_id):
                watch.check = True
                marked += 1
        return marked

    def verdict(self, watch: Watch) -> tuple[str, str, str] | None:
        """None while the stream's key serves, else how the stream ends."""
        if watch.expired(utcnow()):
            return ENDED["expired_api_key"]
        cache = self.app.extensions.get("silk.keycache")
        if cache is not None:
            fresh, principal = cache.get(watch.key_hash)
            if fresh and principal is not None:
                return None  # known good within the TTL, and no change dropped it since
        try:
            with self.app.app_context():
                if auth.still_serving(watch.key_hash) is not None:
                    return None
                return ENDED[auth.why_refused(watch.key_id)]
        except Exception:  # noqa: BLE001 - the stream was admitted; the next mark tries again
            now = time.monotonic()
            if now - self._warned_at >= _WARN_EVERY:
                self._warned_at = now
                log.warning("could not check the keys of open streams; they go on",
                            exc_info=True)
            return None

    def _period(self) -> float:
        cache = self.app.extensions.get("silk.keycache")
        ttl = cache.ttl if cache is not None else self.app.config["SILK_KEY_CACHE_TTL"]
        return max(float(ttl) / 2, _SHORTEST)

    def _sleep(self) -> None:
        """Until the next period, or the soonest expiry yet to come of an open stream's key
        if sooner (a stream registered meanwhile with a sooner one wakes it to look again)."""
        deadline = time.monotonic() + self._period()
        while True:
            now = utcnow()
            with self._lock:
                self._woken.clear()
                expiries = [watch.expires_at for watch in self._open
                            if watch.expires_at is not None and watch.expires_at > now]
                left = deadline - time.monotonic()
                if expiries:  # just past it, so that the check sees it come
                    left = min(left, (min(expiries) - now).total_seconds() + 0.01)
                self._waking_at = now + timedelta(seconds=max(left, 0.0))
            if left <= 0 or not self._woken.wait(left):
                return

    def _run(self) -> None:
        try:
            while True:
                self._sleep()
                with self._lock:
                    if not self._open:
                        self._timer = None  # in the lock: a stream added now starts another
                        return
                    streams = list(self._open)
                for watch in streams:
                    watch.check = True
        except BaseException:  # a timer that failed must not stop the next from starting
            with self._lock:
                self._timer = None
            raise


def open_streams(app: Flask) -> OpenStreams:
    """This process's registry of `app`'s open streams (a fork starts its own)."""
    streams = app.extensions.get(_STATE)
    if streams is None or streams.pid != os.getpid():
        streams = app.extensions[_STATE] = OpenStreams(app)
    return streams


def changed(app: Flask, kind: str, value: str) -> None:
    """silk.invalidation's message `kind value` arrived: mark the streams it concerns."""
    streams = app.extensions.get(_STATE)
    if streams is None or streams.pid != os.getpid():
        return
    if kind == "key":
        streams.mark(key_hash=value)
    elif kind == "account" and value.isdigit():
        streams.mark(account_id=int(value))
    elif kind == "*":
        streams.mark()
