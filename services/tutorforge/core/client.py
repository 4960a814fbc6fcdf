"""Client side: channels that carry the API token, over TLS when configured. The SDK's connections
(tutorforge.client, sync and asyncio) open theirs here; tests and benchmarks use `open_channel` for raw stubs."""

from __future__ import annotations

from typing import Any

import grpc

from tutorforge.core.telemetry import tracing
from tutorforge.core.tls import channel_credentials


class _BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                   grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    def __init__(self, token: str):
        self._metadata = ("authorization", f"Bearer {token}")

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = list(details.metadata or []) + [self._metadata]
        return details._replace(metadata=metadata) if hasattr(details, "_replace") else _CallDetails(details, metadata)

    def intercept_unary_unary(self, continuation, details, request):  # noqa: ANN001, ANN201
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):  # noqa: ANN001, ANN201
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):  # noqa: ANN001, ANN201
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator):  # noqa: ANN001, ANN201
        return continuation(self._details(details), request_iterator)


class _TraceContext(_BearerToken):
    """Adds the caller's trace context (W3C traceparent) to each call, so the callee's spans join its trace."""

    def __init__(self) -> None:
        pass

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = tracing.inject(list(details.metadata or []))
        return details._replace(metadata=metadata) if hasattr(details, "_replace") else _CallDetails(details, metadata)


class _CallDetails(grpc.ClientCallDetails):
    def __init__(self, base: grpc.ClientCallDetails, metadata: list[tuple[str, str]]):
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = getattr(base, "wait_for_ready", None)
        self.compression = getattr(base, "compression", None)


def channel_options(max_message_bytes: int, tls: Any = None) -> tuple[list[tuple[str, Any]], grpc.ChannelCredentials | None]:
    """Options and credentials (None = plaintext) of a channel, sync or asyncio: TLS when `tls`
    (TlsSettings) names a CA, mTLS with its cert/key."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]
    credentials = channel_credentials(tls) if tls is not None else None
    if credentials is not None and tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return options, credentials


def open_channel(
    address: str, token: str | None = None, max_message_bytes: int = 64 * 1024 * 1024, tls: Any = None
) -> grpc.Channel:
    """A channel carrying `token`; over TLS when `tls` (TlsSettings) names a CA (mTLS with its cert/key)."""
    options, credentials = channel_options(max_message_bytes, tls)
    if credentials is None:
        channel = grpc.insecure_channel(address, options=options)
    else:
        channel = grpc.secure_channel(address, credentials, options=options)
    if token:
        channel = grpc.intercept_channel(channel, _BearerToken(token))
    if tracing.enabled():
        channel = grpc.intercept_channel(channel, _TraceContext())
    return channel
