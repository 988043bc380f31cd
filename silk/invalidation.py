"""Tell every worker and host at once that a key, an account or the tier table changed.

Each worker caches key lookups (SILK_KEY_CACHE_TTL), the tier table, and (on PostgreSQL)
the metering channel's last state of each account. The process that makes a change drops
its own entries at once. Without Redis, other workers see the change when their entries
expire: the TTL is the bound. With REDIS_URL, the change is also published on a pub/sub
channel (SILK_INVALIDATION_CHANNEL) and every worker's subscriber, a daemon thread (a
greenlet under gevent), drops the same entries within a round trip. A subscriber that
loses Redis reconnects and then drops everything it guards, as it may have missed
messages; while Redis is away the TTL is the bound again. Publishing never fails the
change that triggered it. Open streams of a changed key or account check it again before
their next upstream read (silk.relay.revocation).

Messages are short strings: `key <sha256>`, `account <id>`, `tiers`.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from flask import Flask, current_app

log = logging.getLogger("silk.invalidation")

_PING_AFTER = 5.0  # seconds of silence before the subscriber pings Redis
_DEAD_AFTER = 10.0  # seconds of silence (ping unanswered) before it reconnects
_RETRY_MAX = 5.0  # longest wait between reconnection attempts
_STATE = "silk.invalidation"


def key_changed(key_hash: str) -> None:
    """A key was revoked: forget its lookup here and everywhere."""
    _announce(f"key {key_hash}")


def account_changed(account_id: int) -> None:
    """An account was disabled, enabled or moved to another tier."""
    _announce(f"account {int(account_id)}")


def tiers_changed() -> None:
    """The tier table changed."""
    _announce("tiers")


def _announce(message: str) -> None:
    app = current_app._get_current_object()
    drop(app, message)
    if app.config.get("REDIS_URL"):
        _state(app).publish(message)


def drop(app: Flask, message: str) -> None:
    """Drop this process's cached answers that `message` makes stale (`*`: all of them),
    and mark the open streams it concerns (silk.relay.revocation)."""
    from silk.relay import revocation

    kind, _, value = message.partition(" ")
    keys = app.extensions.get("silk.keycache")
    tier_table = app.extensions.get("silk.tiers")
    if kind == "key" and keys is not None:
        keys.forget(value)
    elif kind == "account" and value.isdigit():
        if keys is not None:
            keys.forget_account(int(value))
        _drop_snapshots(app, int(value))
    elif kind == "tiers" and tier_table is not None:
        tier_table.clear()
    elif kind == "*":
        for cache in (keys, tier_table):
            if cache is not None:
                cache.clear()
        _drop_snapshots(app, None)
    # After the entries are gone, so a stream's check cannot find the stale one.
    revocation.changed(app, kind, value)  # open streams of the key or account check it


def _drop_snapshots(app: Flask, account_id: int | None) -> None:
    """Forget the PostgreSQL metering channel's last state of an account (None: of all).

    Not needed for correctness: the reserve statement re-checks `disabled` and the tier
    on the row itself, so a stale state only costs a retry. Dropping it saves that retry.
    """
    from silk.extensions import db
    from silk.metering import postgres

    with app.app_context():
        engine = db.engine
        if engine.dialect.name != "postgresql":
            return
        snapshots = postgres.channel(engine).snapshots
    if account_id is None:
        snapshots.clear()
    else:
        snapshots.pop(account_id, None)


def start_subscriber(app: Flask) -> None:
    """Run this process's subscriber for `app` when REDIS_URL is set (once per process).

    Gunicorn calls it in each worker after the fork (a thread does not survive one);
    every request also makes sure of it, so an app built by create_app alone is covered.
    """
    if app.config.get("REDIS_URL"):
        _state(app).start()


def stop_subscriber(app: Flask) -> None:
    """Stop this process's subscriber, if any (tests, shutdown)."""
    state = app.extensions.get(_STATE)
    if state is not None and state.pid == os.getpid():
        state.stop()


def install(app: Flask) -> None:
    """With REDIS_URL, make sure each process that serves requests runs a subscriber."""
    if not app.config.get("REDIS_URL"):
        return  # without Redis a change reaches other workers within the caches' TTL

    @app.before_request
    def _subscribed():
        state = app.extensions.get(_STATE)
        if state is None or state.pid != os.getpid() or state.thread is None:
            start_subscriber(app)


def _state(app: Flask) -> Invalidation:
    state = app.extensions.get(_STATE)
    if state is None or state.pid != os.getpid():  # a fork's copy is the parent's
        state = app.extensions[_STATE] = Invalidation(
            app, app.config["REDIS_URL"], app.config["SILK_INVALIDATION_CHANNEL"])
    return state


class Invalidation:
    """One process's publisher and subscriber on the invalidation channel."""

    def __init__(self, app: Flask, url: str, channel: str):
        self.app = app
        self.url = url
        self.channel = channel
        self.pid = os.getpid()
        # Names the subscriber's connection in Redis's CLIENT LIST.
        self.client_name = f"silk-invalidation-{self.pid}-{id(self):x}"
        self.thread: threading.Thread | None = None
        self.listening = threading.Event()  # set while subscribed
        # Subscriptions confirmed, each after dropping what was cached: redis-py may
        # reconnect and subscribe again by itself, while `listening` stays set.
        self.subscriptions = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._publisher = None

    def publish(self, message: str) -> None:
        """Send `message` to every subscriber; on failure log it (the TTL still bounds)."""
        try:
            if self._publisher is None:
                import redis

                self._publisher = redis.Redis.from_url(self.url, socket_timeout=0.5,
                                                       socket_connect_timeout=0.5)
            self._publisher.publish(self.channel, message)
        except Exception:  # noqa: BLE001 - a Redis outage must not fail the change itself
            log.warning("redis unavailable; other workers see the change within the cache "
                        "TTL", exc_info=True)

    def start(self) -> None:
        """Start the subscriber thread unless it runs."""
        with self._lock:
            if self.thread is not None or self._stop.is_set():
                return
            self.thread = threading.Thread(target=self._run, name="silk-invalidation",
                                           daemon=True)
            self.thread.start()

    def stop(self) -> None:
        """Ask the subscriber to stop; it does within a second."""
        self._stop.set()

    def _run(self) -> None:
        wait = 0.1
        while not self._stop.is_set():
            try:
                self._listen()
                wait = 0.1
            except Exception:  # noqa: BLE001 - Redis failed: reconnect, after a pause
                self.listening.clear()
                log.warning("invalidation channel lost; reconnecting", exc_info=True)
                self._stop.wait(wait)
                wait = min(wait * 2, _RETRY_MAX)

    def _listen(self) -> None:
        import redis

        client = redis.Redis.from_url(self.url, socket_connect_timeout=1.0,
                                      socket_timeout=_DEAD_AFTER, client_name=self.client_name)
        pubsub = client.pubsub()
        try:
            pubsub.subscribe(self.channel)
            heard, pinged = time.monotonic(), False
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=1.0)
                now = time.monotonic()
                if message is None:
                    if now - heard > _DEAD_AFTER:
                        raise ConnectionError("redis did not answer a ping")
                    if now - heard > _PING_AFTER and not pinged:
                        pubsub.ping()
                        pinged = True
                    continue
                heard, pinged = now, False
                if message["type"] == "subscribe":
                    # Whatever changed while this worker was not listening is unknown.
                    drop(self.app, "*")
                    self.subscriptions += 1
                    self.listening.set()
                elif message["type"] == "message":
                    data = message["data"]
                    drop(self.app, data.decode() if isinstance(data, bytes) else data)
        finally:
            self.listening.clear()
            pubsub.close()
            client.close()
