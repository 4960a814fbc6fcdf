"""One connection to a tutorforge server as the SDK's clients use it: the channel (token, TLS: built by
core/client.py), a deadline per kind of call, retries with backoff, and domain errors instead of
grpc.RpcError."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar

import grpc

from tutorforge.core.admission import RETRY_AFTER_KEY
from tutorforge.core.client import open_channel
from tutorforge.core.errors import TutorforgeError, error_for_status
from tutorforge.core.settings import Settings, TlsSettings

DEFAULT_ADDRESS = "127.0.0.1:50051"

# Default deadline, in seconds, of each kind of call (None = as long as it takes). Every client method
# names its kind; `Connection(deadlines={...})` overrides entries.
DEADLINES: Mapping[str, float | None] = {
    "read": 30.0,  # Get*, List*, Search, stats: answered from the store or the index
    "start": 60.0,  # starting a job (CreateDataset, StartTraining, StartOptimization, Evaluate)
    "write": 120.0,  # deletes, LoadAdapter (reads adapter weights), PromoteProgram
    "ingest": 900.0,  # IngestDocuments: embedding on CPU, ~300 sentences/s on 2 cores
    "generate": 600.0,  # Generate, Chat and their streams on a CPU model
    "watch": None,  # Watch* streams last as long as the job; wait(timeout=...) bounds them
}

# How often a call with `poll` checks whether its caller still wants the reply.
_POLL_SECONDS = 1.0
_RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})

Reply = TypeVar("Reply")


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of calls refused with UNAVAILABLE (server down or draining) or RESOURCE_EXHAUSTED (shed by
    admission control): exponential backoff with jitter, or the server's `retry-after-ms` hint when given."""

    attempts: int = 5
    initial_backoff: float = 0.2
    max_backoff: float = 5.0
    multiplier: float = 2.0
    codes: frozenset[grpc.StatusCode] = field(default=_RETRYABLE)

    def backoff(self, attempt: int) -> float:
        """Seconds before retry number `attempt` (1-based) without a hint: exponential, capped, with jitter
        that spreads the retries of many clients refused at the same moment."""
        return min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1)) * random.uniform(0.5, 1.0)

    def delay(self, attempt: int, error: grpc.RpcError) -> float:
        """Seconds to wait before retry number `attempt` (1-based) of a call that failed with `error`."""
        hint = retry_after_seconds(error)
        return self.backoff(attempt) if hint is None else hint


DEFAULT_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(attempts=1)


def retry_after_seconds(error: grpc.RpcError) -> float | None:
    """The server's retry hint (trailing metadata `retry-after-ms`), in seconds, if it sent one."""
    trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailing or ():
        if key == RETRY_AFTER_KEY:
            try:
                return max(0.0, int(value) / 1000)
            except ValueError:
                return None
    return None


def domain_error(error: grpc.RpcError, address: str) -> TutorforgeError:
    """The domain error (core/errors.py) of a failed call, with the server's message."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = (error.details() if hasattr(error, "details") else None) or str(error)
    if code == grpc.StatusCode.UNAVAILABLE:
        details = f"cannot reach tutorforge at {address} ({details})"
    return error_for_status(code, details)


def _polled(start: Callable[[], grpc.Future], poll: Callable[[], None]) -> Any:
    """The result of the call `start` makes, calling `poll` before it and while waiting; the call is
    cancelled if `poll` raises."""
    poll()
    call = start()
    while True:
        try:
            return call.result(timeout=_POLL_SECONDS)
        except grpc.FutureTimeoutError:
            try:
                poll()
            except BaseException:
                call.cancel()
                raise


class Endpoint:
    """Address, deadlines and retry policy of a connection, sync or asyncio; subclasses open the channel."""

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        token: str | None = None,
        tls: TlsSettings | None = None,
        deadlines: Mapping[str, float | None] | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        max_message_bytes: int = 64 * 1024 * 1024,
    ):
        unknown = sorted(set(deadlines or {}) - set(DEADLINES))
        if unknown:
            raise ValueError(f"deadlines: unknown kind(s) {', '.join(unknown)}; kinds are {', '.join(DEADLINES)}")
        self.address = address
        self.deadlines = {**DEADLINES, **(deadlines or {})}
        self.retry = retry
        self.channel = self._open(token, tls, max_message_bytes)

    def _open(self, token: str | None, tls: TlsSettings | None, max_message_bytes: int) -> Any:
        raise NotImplementedError

    @classmethod
    def from_settings(cls, settings: Settings | None = None, service: str = "inference", **options: Any) -> Self:
        """Address (`addresses.<service>`, else this host's server port), API token and TLS from settings,
        i.e. from TUTORFORGE_* variables and TUTORFORGE_CONFIG."""
        settings = settings or Settings()
        token = settings.server.api_token.get_secret_value() if settings.server.api_token else None
        return cls(settings.address_of(service), token=token or None, tls=settings.tls, **options)

    def deadline(self, kind: str) -> float | None:
        return self.deadlines[kind]


class Connection(Endpoint):
    """A channel to one tutorforge server with the SDK's call policy. Share one among clients of the
    services that server hosts; close it (or use `with`) when done."""

    def _open(self, token: str | None, tls: TlsSettings | None, max_message_bytes: int) -> grpc.Channel:
        return open_channel(self.address, token, max_message_bytes=max_message_bytes, tls=tls)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _attempts(self, call: Callable[[], Reply]) -> Reply:
        attempt = 0
        while True:
            attempt += 1
            try:
                return call()
            except grpc.RpcError as error:
                if error.code() not in self.retry.codes or attempt >= self.retry.attempts:
                    raise domain_error(error, self.address) from error
                time.sleep(self.retry.delay(attempt, error))

    def unary(
        self, method: Callable[..., Reply], request: Any, kind: str, poll: Callable[[], None] | None = None
    ) -> Reply:
        """Call a unary RPC with the deadline of `kind`, retrying refusals. `poll`, when given, is called
        before the call and about every second while it runs: whatever it raises (a cancelled job, a spent
        budget) cancels the call and propagates."""
        if poll is None:
            return self._attempts(lambda: method(request, timeout=self.deadline(kind)))
        return self._attempts(lambda: _polled(lambda: method.future(request, timeout=self.deadline(kind)), poll))

    def pages(self, method: Callable[..., Any], request: Callable[[str], Any]) -> Iterator[Any]:
        """Every page of a paged List RPC: `request(page_token)` makes each page's request; pages follow
        next_page_token until it is empty."""
        token = ""
        while True:
            page = self.unary(method, request(token), "read")
            yield page
            token = page.next_page_token
            if not token:
                return

    def upload(self, method: Callable[..., Reply], requests: Callable[[], Iterator[Any]], kind: str) -> Reply:
        """Call a client-streaming RPC; `requests` makes the request stream afresh for each attempt."""
        return self._attempts(lambda: method(requests(), timeout=self.deadline(kind)))

    def stream(self, method: Callable[..., Iterator[Reply]], request: Any, kind: str, timeout: float | None = None) -> Iterator[Reply]:
        """Call a server-streaming RPC. A refusal before the first message is retried; once messages have
        arrived a failure is raised (as its domain error), since replaying would repeat them."""
        attempt = 0
        while True:
            attempt += 1
            received = False
            try:
                for reply in method(request, timeout=timeout if timeout is not None else self.deadline(kind)):
                    received = True
                    yield reply
                return
            except grpc.RpcError as error:
                if received or error.code() not in self.retry.codes or attempt >= self.retry.attempts:
                    raise domain_error(error, self.address) from error
                time.sleep(self.retry.delay(attempt, error))
