"""The server interceptor over a real loopback socket: auth, error mapping, call logging."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tutorforge.core.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from tutorforge.core.interceptor import ServerInterceptor

ERRORS = {
    b"invalid": InvalidArgument("limit must be between 1 and 100, got 0"),
    b"missing": NotFound("document 'x' does not exist"),
    b"precondition": FailedPrecondition("adapter was trained for another base model"),
    b"full": ResourceExhausted("queue is full (64 requests); retry later"),
    b"crash": RuntimeError("boom"),
}


def _unary(request: bytes, context: grpc.ServicerContext) -> bytes:
    if request in ERRORS:
        raise ERRORS[request]
    return b"echo:" + request


def _stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    yield b"first"
    if request in ERRORS:
        raise ERRORS[request]
    yield b"second"


@pytest.fixture
def channel_for() -> Iterator:
    servers = []

    def _make(token: str | None) -> grpc.Channel:
        server = grpc.server(futures.ThreadPoolExecutor(4), interceptors=[ServerInterceptor(token)])
        server.add_generic_rpc_handlers([
            grpc.method_handlers_generic_handler("test.Echo", {
                "Unary": grpc.unary_unary_rpc_method_handler(_unary),
                "Stream": grpc.unary_stream_rpc_method_handler(_stream),
            })
        ])
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return grpc.insecure_channel(f"127.0.0.1:{port}")

    yield _make
    for server in servers:
        server.stop(0)


@pytest.mark.parametrize(
    ("payload", "code", "fragment"),
    [
        (b"invalid", grpc.StatusCode.INVALID_ARGUMENT, "limit must be between"),
        (b"missing", grpc.StatusCode.NOT_FOUND, "does not exist"),
        (b"precondition", grpc.StatusCode.FAILED_PRECONDITION, "another base model"),
        (b"full", grpc.StatusCode.RESOURCE_EXHAUSTED, "retry later"),
        (b"crash", grpc.StatusCode.INTERNAL, "RuntimeError"),
    ],
)
def test_domain_errors_become_status_codes(channel_for, payload: bytes, code: grpc.StatusCode, fragment: str) -> None:
    channel = channel_for(None)
    with pytest.raises(grpc.RpcError) as unary:
        channel.unary_unary("/test.Echo/Unary")(payload)
    assert unary.value.code() == code and fragment in unary.value.details()
    stream = channel.unary_stream("/test.Echo/Stream")(payload)
    assert next(stream) == b"first"
    with pytest.raises(grpc.RpcError) as streamed:
        next(stream)
    assert streamed.value.code() == code


def test_token_required_when_configured(channel_for, caplog: pytest.LogCaptureFixture) -> None:
    channel = channel_for("tok3n")
    call = channel.unary_unary("/test.Echo/Unary")
    with pytest.raises(grpc.RpcError) as missing:
        call(b"hi")
    assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as wrong:
        call(b"hi", metadata=[("authorization", "Bearer nope")])
    assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with caplog.at_level(logging.INFO, logger="tutorforge.rpc"):
        assert call(b"hi", metadata=[("authorization", "Bearer tok3n")]) == b"echo:hi"
    logged = [r for r in caplog.records if r.name == "tutorforge.rpc"]
    assert logged and logged[-1].fields["method"] == "/test.Echo/Unary" and logged[-1].fields["status"] == "OK"
    assert logged[-1].fields["duration_ms"] >= 0


def test_health_check_passes_through_untouched(caplog: pytest.LogCaptureFixture) -> None:
    """Probes are answered as they come, even with a token configured: no auth, no audit, no call log
    (a kubelet probes every few seconds; nothing other calls hold can delay it)."""
    server = grpc.server(futures.ThreadPoolExecutor(4), interceptors=[ServerInterceptor("tok3n")])
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        with caplog.at_level(logging.INFO):
            answer = stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        assert not [r for r in caplog.records if r.name in ("tutorforge.rpc", "tutorforge.audit")]
    finally:
        server.stop(0)


def test_open_reads_are_not_audited(caplog: pytest.LogCaptureFixture) -> None:
    """Health Watch and reflection stay open and change nothing: no audit line (a mutating call has one)."""
    from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(4), interceptors=[ServerInterceptor("tok3n")])
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    reflection.enable_server_reflection(("grpc.health.v1.Health", reflection.SERVICE_NAME), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        with caplog.at_level(logging.INFO):
            listed = next(reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
            ))
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=10)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            watch.cancel()
        assert "grpc.health.v1.Health" in {s.name for s in listed.list_services_response.service}
        assert not [r for r in caplog.records if r.name == "tutorforge.audit"]
    finally:
        server.stop(0)
