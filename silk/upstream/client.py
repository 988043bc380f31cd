"""Provider clients: one pooled HTTP session per provider, key rotation with rest and failover."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping

import requests
import urllib3
from requests.adapters import HTTPAdapter

from silk.catalog.catalogue import Catalogue, Provider
from silk.errors import ServiceUnavailable, SilkError, UpstreamError, UpstreamTimeout
from silk.upstream.dialects import retry_after_seconds, translate
from silk.upstream.transport import SilentAfterRequest, Transport

log = logging.getLogger("silk.upstream")

# The Anthropic Messages version the gateway speaks to a provider's native endpoint.
ANTHROPIC_VERSION = "2023-06-01"

# Before the first byte reaches the client these mean "this key or host, now": try another.
# So do a refused or timed-out connection; a provider that took the whole request and then
# stayed silent may be generating it, and is not sent it again (see `open`).
FAILOVER_STATUSES = frozenset({401, 402, 403, 429, 500, 502, 503, 504, 520, 529})
_MAX_ERROR_BODY = 64 * 1024
# The least a key is given of a wait nearly spent: a timer of 0 would not wait at all.
_LEAST_WAIT = 0.001

OnFailover = Callable[[str, str], None]  # (provider id, why the last key failed)


def _ignore_failover(provider: str, reason: str) -> None:
    """The default: nobody is told that a request moved on to the next key."""


class UpstreamClient:
    """Talks to one provider's `{base}/chat/completions`, and to `{anthropic base}/v1/messages`
    where the provider serves Anthropic Messages natively (the `anthropic` dialect).

    `on_failover(provider_id, reason)` is called each time a request moves on to the next
    key, so that whoever counts failovers does so without this module knowing about it.
    """

    def __init__(self, provider: Provider, *, connect_timeout: float, read_timeout: float,
                 min_tokens_per_second: float, max_answer_wait: float, pool_size: int,
                 cooldown: float, max_retry_after: float,
                 on_failover: OnFailover = _ignore_failover):
        self.provider = provider
        self.url = provider.base_url + "/chat/completions"
        self.timeout = (connect_timeout, read_timeout)
        self.min_tokens_per_second = min_tokens_per_second  # the slowest plausible generation
        self.max_answer_wait = max_answer_wait  # the longest a JSON answer's body may take
        self.cooldown = cooldown
        self.max_retry_after = max_retry_after  # the longest rest a Retry-After may ask
        self.on_failover = on_failover
        # The adapter only sizes the pool and sets up TLS as requests would: requests go out
        # through the transport, which never reads proxy or netrc settings from the
        # environment (destinations come only from operator configuration).
        self.adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        self.transport = Transport(self.adapter, self.url)
        # Every header but the length depends only on the key and the mode: made once.
        self._headers = {(key, stream): {
            "Authorization": f"Bearer {key}", "Content-Type": "application/json",
            "Accept": "text/event-stream" if stream else "application/json",
            "Accept-Encoding": "identity"} for key in provider.keys for stream in (False, True)}
        self.anthropic: Transport | None = None
        if provider.anthropic_base_url:
            self.anthropic = Transport(self.adapter, provider.anthropic_base_url + "/v1/messages")
            # The key both ways: DeepSeek and MiMo document x-api-key for their Anthropic
            # endpoints and accept a Bearer token too, as Claude Code sends it.
            for key in provider.keys:
                for stream in (False, True):
                    self._headers[(key, stream, "anthropic")] = {
                        **self._headers[(key, stream)], "x-api-key": key,
                        "anthropic-version": ANTHROPIC_VERSION}
        self._resting: dict[str, float] = {}
        self._turn = itertools.count()
        self._lock = threading.Lock()

    def keys_in_order(self) -> list[str]:
        """Keys to try: round-robin start, resting keys last (tried only if all rest)."""
        keys = self.provider.keys
        if not keys:
            return []
        start = next(self._turn) % len(keys)
        rotated = keys[start:] + keys[:start]
        now = time.monotonic()
        ready = [k for k in rotated if self._resting.get(k, 0.0) <= now]
        return ready + [k for k in rotated if k not in ready]

    def rest(self, key: str, seconds: float | None = None) -> None:
        """Take a key out of rotation for a while after it failed."""
        with self._lock:
            self._resting[key] = time.monotonic() + (self.cooldown if seconds is None else seconds)

    @property
    def timeout(self) -> tuple[float, float]:
        """(connect, read) seconds; read is the longest silence allowed between bytes."""
        return self._timeout

    @timeout.setter
    def timeout(self, value: tuple[float, float]) -> None:
        self._timeout = value
        self._urllib3_timeout = urllib3.Timeout(connect=value[0], read=value[1])

    def first_byte_wait(self, max_output: int) -> float:
        """Seconds a JSON answer's body may take to begin: a provider that sends it only once
        it is complete is silent while it generates it, so the read timeout plus `max_output`
        tokens at the slowest plausible rate, at most SILK_UPSTREAM_MAX_ANSWER_WAIT (never
        less than the read timeout)."""
        read = self.timeout[1]
        generation = read + max_output / self.min_tokens_per_second
        return max(read, min(generation, self.max_answer_wait))

    def _request_headers(self, key: str, body: bytes, stream: bool,
                         dialect: str = "chat") -> dict[str, str]:
        """The headers of one request, in the order they always went out."""
        headers = self._headers[(key, stream) if dialect == "chat" else (key, stream, dialect)]
        return {**headers, "Content-Length": str(len(body)), "User-Agent": "SilkGateway"}

    def open(self, body: bytes, *, stream: bool, max_output: int, dialect: str = "chat",
             deadline: float | None = None) -> requests.Response:
        """POST the body in `dialect` (chat, or anthropic where the provider serves it),
        failing over across keys until one answers 200; else raise.

        `max_output` is the output the body allows: a JSON answer may be silent while it is
        generated, and its body must begin by `deadline` (time.monotonic(); by default
        `first_byte_wait` from now). Each key is given what is left of that wait, its
        connect timeout too; none is tried once it is spent, so failing over never makes a
        JSON answer wait longer. A stream's every silence is the read timeout.
        """
        keys = self.keys_in_order()
        if not keys:
            raise _elsewhere(ServiceUnavailable(
                "This model's provider is not configured on the gateway.",
                code="provider_not_configured"))
        transport = self.transport
        if dialect == "anthropic":
            if self.anthropic is None:
                raise ServiceUnavailable("This model's provider has no Anthropic endpoint "
                                         "configured.", code="provider_not_configured")
            transport = self.anthropic
        if stream:
            deadline = None
        elif deadline is None:
            deadline = time.monotonic() + self.first_byte_wait(max_output)
        last: SilkError | None = None
        for attempt, key in enumerate(keys):
            timeout, first_byte = self._urllib3_timeout, None
            if deadline is not None:
                first_byte = deadline - time.monotonic()
                if first_byte <= 0 and last is not None:
                    break  # the answer's wait is spent: the last failure is the answer
                first_byte = max(first_byte, _LEAST_WAIT)
                if first_byte < self.timeout[0]:
                    timeout = urllib3.Timeout(connect=first_byte, read=self.timeout[1])
            if attempt:
                self.on_failover(self.provider.id, last.code if last else "unknown")
            try:
                response = transport.post(body, self._request_headers(key, body, stream,
                                                                      dialect),
                                          timeout, first_byte=first_byte)
            except SilentAfterRequest:
                # Another key or route would generate it a second time, and the provider
                # bills the operator for each: the client gets the timeout instead.
                self.rest(key)
                raise UpstreamTimeout("The provider took the request but did not answer in "
                                      "time; it was not sent again elsewhere.") from None
            except requests.Timeout:
                self.rest(key)
                last = UpstreamTimeout("The provider did not answer in time.")
                continue
            except requests.RequestException:
                self.rest(key)
                last = UpstreamError("The provider could not be reached.",
                                     code="upstream_unreachable")
                continue
            if response.status_code == 200:
                return response
            error_body = _read_limited(response)
            error = translate(response.status_code, error_body,
                              response.headers.get("retry-after"))
            log.warning("upstream error", extra={"fields": {
                "provider": self.provider.id, "status": response.status_code,
                "key": key[:6] + "...", "failover": response.status_code in FAILOVER_STATUSES}})
            if response.status_code not in FAILOVER_STATUSES:
                raise error
            self.rest(key, self._asked_rest(response.headers.get("retry-after")))
            last = error
        raise _elsewhere(last or UpstreamError("The provider failed."))

    def _asked_rest(self, retry_after: str | None) -> float | None:
        """The rest a provider's Retry-After asks for (seconds, or until its HTTP date), at
        most SILK_MAX_RETRY_AFTER: one answer of 999999 must not take a key out of service
        for days. None (the cooldown) when it is neither."""
        seconds = retry_after_seconds(retry_after)
        return None if seconds is None else min(float(seconds), self.max_retry_after)

    def key_states(self) -> list[tuple[str, float | None]]:
        """Each key, shown by its first characters, and until when (wall clock) it rests."""
        now, wall = time.monotonic(), time.time()
        return [(key[:6] + "...", wall + (self._resting[key] - now)
                 if self._resting.get(key, 0.0) > now else None) for key in self.provider.keys]


def _elsewhere(error: SilkError) -> SilkError:
    """Mark an error that another route may not meet: every key failed on the same
    conditions key failover moves on (or the provider has none)."""
    error.try_elsewhere = True  # type: ignore[attr-defined]
    return error


def may_try_elsewhere(error: BaseException) -> bool:
    """Whether a request that failed so may fail over to its model's next route."""
    return bool(getattr(error, "try_elsewhere", False))


def _read_limited(response: requests.Response) -> bytes:
    try:
        data = response.raw.read(_MAX_ERROR_BODY)
    except Exception:  # noqa: BLE001 - an unreadable error body still is an error
        data = b""
    finally:
        response.close()
    return data


def build_clients(catalogue: Catalogue, config: Mapping, *,
                  on_failover: OnFailover = _ignore_failover) -> dict[str, UpstreamClient]:
    """One client per provider, sized for a gevent worker's connections."""
    return {
        pid: UpstreamClient(provider, connect_timeout=config["SILK_UPSTREAM_CONNECT_TIMEOUT"],
                            read_timeout=config["SILK_UPSTREAM_READ_TIMEOUT"],
                            min_tokens_per_second=config["SILK_UPSTREAM_MIN_TOKENS_PER_SECOND"],
                            max_answer_wait=config["SILK_UPSTREAM_MAX_ANSWER_WAIT"],
                            pool_size=config["SILK_UPSTREAM_POOL_SIZE"],
                            cooldown=config["SILK_KEY_COOLDOWN"],
                            max_retry_after=config["SILK_MAX_RETRY_AFTER"],
                            on_failover=on_failover)
        for pid, provider in catalogue.providers.items()
    }
