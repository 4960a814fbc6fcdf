"""The bounded queue: full → RESOURCE_EXHAUSTED at once; a cancelled call or an expired deadline frees
its place (one batch slot and one queue place here, so every place is observable)."""

from __future__ import annotations

import time

import grpc
import pytest
from inference_helpers import generate, stream_request

from tutorforge.v1 import inference_pb2_grpc


@pytest.fixture(scope="module")
def stub(module_serve) -> inference_pb2_grpc.InferenceServiceStub:
    _, channel = module_serve("inference", inference__threads=1, inference__max_batch_size=1, inference__max_queue_size=1)
    return inference_pb2_grpc.InferenceServiceStub(channel)


def _exhausted(stub) -> bool:
    try:
        stub.Generate(generate(max_tokens=1), timeout=0.5)
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
            assert "queue is full" in error.details()
            return True
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    return False


def _first_token(call) -> str:
    event = next(call)
    assert event.WhichOneof("event") == "token"
    return event.token.text


def test_full_queue_refuses_and_cancelled_calls_free_their_place(stub):
    running = stub.GenerateStream(stream_request(max_tokens=2000, ignore_eos=True))
    _first_token(running)
    waiting = stub.GenerateStream(stream_request(max_tokens=4))
    time.sleep(1.0)
    # One generating + one waiting: the next call is refused at once, not queued.
    started = time.perf_counter()
    assert _exhausted(stub)
    assert time.perf_counter() - started < 0.5

    # The waiting call goes away: its queue place is free again.
    waiting.cancel()
    time.sleep(0.5)
    replacement = stub.GenerateStream(stream_request(max_tokens=4))
    time.sleep(1.0)
    assert _exhausted(stub)

    # Cancelling the running call frees the batch slot: the queued call starts generating.
    running.cancel()
    with pytest.raises(grpc.RpcError) as cancelled:
        list(running)
    assert cancelled.value.code() == grpc.StatusCode.CANCELLED
    events = list(replacement)
    assert events[-1].WhichOneof("event") == "summary"
    assert events[-1].summary.usage.completion_tokens >= 1


def test_expired_deadline_frees_the_slot(stub):
    with pytest.raises(grpc.RpcError) as expired:
        stub.Generate(generate(max_tokens=2000, ignore_eos=True), timeout=3)
    assert expired.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The slot is free again: a short request completes instead of waiting behind 2000 tokens.
    started = time.perf_counter()
    response = stub.Generate(generate(max_tokens=3, ignore_eos=True), timeout=120)
    assert response.summary.usage.completion_tokens == 3
    assert time.perf_counter() - started < 60
