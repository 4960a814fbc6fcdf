"""Bounded concurrency per kind of call, so that long streams (Watch, ChatStream) cannot take every worker
thread: a call over its kind's limit is shed at once with RESOURCE_EXHAUSTED and a retry hint
(trailing metadata `retry-after-ms`), never queued. Health checks have no limit and the worker pool is
sized above the sum of the limits, so a thread is always free for them; health Watch and reflection
streams, open without a token, share their own small limit."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from tutorforge.core.errors import ResourceExhausted
from tutorforge.core.settings import ServerSettings

RETRY_AFTER_KEY = "retry-after-ms"
UNARY, SERVER_STREAM, CLIENT_STREAM, OPEN_STREAM = "unary", "server stream", "client stream", "open stream"


def kind_of(handler: grpc.RpcMethodHandler, is_open: bool) -> str | None:
    """The limit a call counts against; None for open unary calls (health Check), which are never shed."""
    if is_open:
        return OPEN_STREAM if handler.response_streaming or handler.request_streaming else None
    if handler.request_streaming:
        return CLIENT_STREAM
    return SERVER_STREAM if handler.response_streaming else UNARY


class Limit:
    """At most `size` holders at once; `take` never waits: it raises ResourceExhausted with the hint."""

    def __init__(self, size: int, what: str, retry_after_ms: int):
        self.size, self.what, self.retry_after_ms = size, what, retry_after_ms
        self._slots = threading.BoundedSemaphore(size)

    def take(self) -> None:
        if not self._slots.acquire(blocking=False):
            raise ResourceExhausted(
                f"the server is at its limit of {self.size} concurrent {self.what}; retry after {self.retry_after_ms} ms"
            )

    def give_back(self) -> None:
        self._slots.release()


class Admission:
    def __init__(self, settings: ServerSettings):
        self.limits = {
            UNARY: settings.max_concurrent_unary,
            SERVER_STREAM: settings.max_concurrent_server_streams,
            CLIENT_STREAM: settings.max_concurrent_client_streams,
            OPEN_STREAM: settings.max_concurrent_open_streams,
        }
        self.retry_after_ms = settings.retry_after_ms
        self._slots = {kind: Limit(limit, f"{kind} calls", self.retry_after_ms) for kind, limit in self.limits.items()}
        # Threads beyond the limits: health checks and the refusals of shed calls run on these.
        self.workers = max(settings.max_workers, sum(self.limits.values()) + settings.reserved_workers)

    @contextmanager
    def slot(self, kind: str | None, context: grpc.ServicerContext) -> Iterator[None]:
        """Hold one slot of `kind` for the call's duration; ResourceExhausted (with the hint) when full."""
        if kind is None:
            yield
            return
        try:
            self._slots[kind].take()
        except ResourceExhausted:
            self._hint(context)
            raise
        try:
            yield
        except ResourceExhausted:
            # Shed further in (the inference queue is full): the same hint.
            self._hint(context)
            raise
        finally:
            self._slots[kind].give_back()

    def _hint(self, context: grpc.ServicerContext) -> None:
        context.set_trailing_metadata(((RETRY_AFTER_KEY, str(self.retry_after_ms)),))
