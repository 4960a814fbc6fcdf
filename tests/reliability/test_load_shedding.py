"""Bounded concurrency per kind of call: with the server-stream limit taken by real generation streams,
health still answers, unary calls still run, and one more stream is shed at once with RESOURCE_EXHAUSTED
and a retry hint; the HTTP door answers 429 with Retry-After the same way. Not timed: it proves the
behaviour, bench/load.py measures it."""

from __future__ import annotations

import time

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tutorforge.core.admission import RETRY_AFTER_KEY
from tutorforge.core.client import open_channel
from tutorforge.core.server import start_server
from tutorforge.v1 import inference_pb2, inference_pb2_grpc

from tests.conftest import make_settings
from tests.reliability.reliability_helpers import free_port, healthy

# Loading the model takes most of the time (a minute on a busy 2-core machine).
pytestmark = pytest.mark.slow
LONG = inference_pb2.GenerationParameters(max_tokens=2000, ignore_eos=True)


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    """One server for the module (the model loads once); each test gives its slots back."""
    port = free_port()
    settings = make_settings(
        tmp_path_factory.mktemp("limited"),
        server__max_concurrent_server_streams=2,
        server__max_concurrent_open_streams=1,
        server__max_concurrent_http=1,
        server__http_port=port,
    )
    running = start_server(settings, ("inference",), port=0)
    channel = open_channel(running.address)
    yield channel, f"http://127.0.0.1:{port}"
    channel.close()
    running.stop(grace=1)


def _first_token(stream: grpc.Future) -> None:
    """Wait until the stream is admitted and generating (it then holds its slot)."""
    next(stream)


def test_saturated_streams_shed_the_next_one_while_health_answers(limited) -> None:
    channel, _ = limited
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    streams = [stub.GenerateStream(inference_pb2.GenerateStreamRequest(prompt=f"Story {i}:", parameters=LONG)) for i in range(2)]
    try:
        for stream in streams:
            _first_token(stream)
        with pytest.raises(grpc.RpcError) as shed:
            next(stub.GenerateStream(inference_pb2.GenerateStreamRequest(prompt="One more", parameters=LONG), timeout=30))
        assert shed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "server stream" in shed.value.details()
        hints = dict(shed.value.trailing_metadata() or ())
        assert int(hints[RETRY_AFTER_KEY]) > 0
        # Health and unary calls have their own room.
        assert healthy(channel, timeout=5)
        assert stub.ListAdapters(inference_pb2.ListAdaptersRequest(), timeout=10).base_model
    finally:
        for stream in streams:
            stream.cancel()
    # Cancelled streams give their slots back.
    deadline = time.monotonic() + 30
    while True:
        try:
            stream = stub.GenerateStream(inference_pb2.GenerateStreamRequest(prompt="Again", parameters=LONG), timeout=30)
            _first_token(stream)
            stream.cancel()
            break
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and time.monotonic() < deadline


def test_open_health_watch_streams_are_bounded_but_check_answers(limited) -> None:
    channel, _ = limited
    health = health_pb2_grpc.HealthStub(channel)
    watching = health.Watch(health_pb2.HealthCheckRequest())
    try:
        assert next(watching).status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as shed:
            next(health.Watch(health_pb2.HealthCheckRequest(), timeout=10))
        assert shed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert healthy(channel, timeout=5)
    finally:
        watching.cancel()


def test_http_door_answers_429_with_retry_after(limited) -> None:
    _, base = limited
    body = {"messages": [{"role": "user", "content": "Tell a long story."}], "max_tokens": 2000, "stream": True,
            "retrieval": False}
    with httpx.Client(timeout=60) as client, client.stream("POST", base + "/v1/chat/completions", json=body) as held:
        assert held.status_code == 200
        next(held.iter_lines())  # the reply is streaming: its slot is taken
        refused = client.post(base + "/v1/chat/completions", json=body)
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) >= 1
        assert "HTTP requests" in refused.json()["error"]["message"]
