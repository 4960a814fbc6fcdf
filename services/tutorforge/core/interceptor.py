"""Server interceptor: scoped bearer-token authentication and audit (core/access.py), domain error → gRPC status mapping, one
structured log line per call (method, status, duration), and draining for graceful shutdown."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from tutorforge.core.access import OPEN_PREFIXES, AccessPolicy, Denial, audited
from tutorforge.core.admission import Admission, kind_of
from tutorforge.core.errors import status_of
from tutorforge.core.telemetry.metrics import observe_rpc
from tutorforge.core.telemetry.tracing import grpc_server_span
from tutorforge.core.validation import checked_request, guard_deserializer

log = logging.getLogger("tutorforge.rpc")

# Probes are answered as they come: no auth, admission, validation, audit or call log on their path.
_HEALTH_CHECK = "/grpc.health.v1.Health/Check"


class ServerInterceptor(grpc.ServerInterceptor):
    def __init__(self, api_token: str | None = None, admission: Admission | None = None, access: AccessPolicy | None = None):
        self._admission = admission
        # Tokens and scopes (core/access.py); a bare api_token is one admin token.
        self._access = access or AccessPolicy.from_token(api_token)
        self._idle = threading.Condition()
        self._in_flight = 0
        self._draining = False

    def begin_drain(self) -> None:
        """Refuse new calls (UNAVAILABLE) while the ones in flight finish."""
        with self._idle:
            self._draining = True

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no call is in flight; False if `timeout` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def _enter(self) -> bool:
        with self._idle:
            if self._draining:
                return False
            self._in_flight += 1
            return True

    def _leave(self) -> None:
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method == _HEALTH_CHECK:
            return handler
        method = handler_call_details.method
        is_open = method.startswith(OPEN_PREFIXES)
        metadata = dict(handler_call_details.invocation_metadata or ())
        principal, denial = (None, None) if is_open else self._access.check_rpc(method, metadata)

        # Bytes that do not decode become INVALID_ARGUMENT in the wrapper, not grpc's INTERNAL.
        deserializer = guard_deserializer(handler.request_deserializer)
        kind = kind_of(handler, is_open)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                audited(method, principal, self._wrap_unary(method, handler.unary_unary, denial, is_open, kind), False),
                deserializer,
                handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                audited(method, principal, self._wrap_stream(method, handler.unary_stream, denial, is_open, kind), True),
                deserializer,
                handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                audited(method, principal, self._wrap_unary(method, handler.stream_unary, denial, is_open, kind), False),
                deserializer,
                handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            audited(method, principal, self._wrap_stream(method, handler.stream_stream, denial, is_open, kind), True),
            deserializer,
            handler.response_serializer,
        )

    def _wrap_unary(self, method: str, behavior: Callable, denial: Denial, is_open: bool, kind: str | None) -> Callable:
        def wrapper(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            self._admit(method, started, context, denial, is_open)
            try:
                with grpc_server_span(method, context), self._slot(kind, context):
                    response = behavior(checked_request(request), context)
            except Exception as error:
                _abort(method, started, context, error)
            finally:
                if not is_open:
                    self._leave()
            _finish(method, started, _code_of(context))
            return response

        return wrapper

    def _wrap_stream(self, method: str, behavior: Callable, denial: Denial, is_open: bool, kind: str | None) -> Callable:
        def wrapper(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            started = time.perf_counter()
            self._admit(method, started, context, denial, is_open)
            try:
                with grpc_server_span(method, context), self._slot(kind, context):
                    yield from behavior(checked_request(request), context)
            except Exception as error:
                _abort(method, started, context, error)
            finally:
                if not is_open:
                    self._leave()
            _finish(method, started, _code_of(context))

        return wrapper

    def _slot(self, kind: str | None, context: grpc.ServicerContext) -> Any:
        """Bounded concurrency per kind of call (core/admission.py); no limit without an Admission."""
        return self._admission.slot(kind, context) if self._admission else contextlib.nullcontext()

    def _admit(self, method: str, started: float, context: grpc.ServicerContext, denial: Denial, is_open: bool) -> None:
        if denial is not None:  # no token, a wrong one, or one without the method's scope
            _finish(method, started, denial[0])
            context.abort(*denial)
        if not is_open and not self._enter():
            _finish(method, started, grpc.StatusCode.UNAVAILABLE)
            context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down; retry on another replica")


def _code_of(context: grpc.ServicerContext) -> grpc.StatusCode:
    return context.code() or grpc.StatusCode.OK


def _abort(method: str, started: float, context: grpc.ServicerContext, error: Exception) -> None:
    already = context.code()
    if already not in (None, grpc.StatusCode.OK):
        # The handler called context.abort itself: the status is set, let its exception through.
        _finish(method, started, already)
        raise error
    code, message = status_of(error)
    if code == grpc.StatusCode.INTERNAL:
        log.exception("unhandled error in %s", method)
    _finish(method, started, code, message)
    context.abort(code, message)


def _finish(method: str, started: float, code: grpc.StatusCode, message: str = "") -> None:
    seconds = time.perf_counter() - started
    observe_rpc(method, code.name, seconds)
    fields = {"method": method, "status": code.name, "duration_ms": round(seconds * 1000, 2)}
    if message:
        fields["error"] = message
    log.info("rpc %s %s", method, code.name, extra={"fields": fields})
