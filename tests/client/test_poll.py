"""`Connection.unary(..., poll=...)` against a real gRPC server on loopback: the caller's check runs before
the call and while it waits, and what it raises (a cancelled job, a spent LM budget) cancels the call on
the server — how the optimization service stops its in-flight chat calls."""

from __future__ import annotations

import threading
import time
from concurrent import futures

import grpc
import pytest
from tutorforge.client import Connection
from tutorforge.v1 import retrieval_pb2, retrieval_pb2_grpc


class Stopped(Exception):
    pass


class SlowStats(retrieval_pb2_grpc.RetrievalServiceServicer):
    """GetStats answers after `seconds`, unless the client cancels first (recorded)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.calls = 0
        self.cancelled = threading.Event()

    def GetStats(self, request, context):
        self.calls += 1
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline:
            if not context.is_active():
                self.cancelled.set()
                return retrieval_pb2.GetStatsResponse()
            time.sleep(0.02)
        return retrieval_pb2.GetStatsResponse(documents=3)


@pytest.fixture
def slow_stats():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))

    def _start(seconds: float) -> tuple[SlowStats, Connection]:
        servicer = SlowStats(seconds)
        retrieval_pb2_grpc.add_RetrievalServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        return servicer, Connection(f"127.0.0.1:{port}")

    yield _start
    server.stop(0)


def _stats(connection: Connection, poll) -> retrieval_pb2.GetStatsResponse:
    stub = retrieval_pb2_grpc.RetrievalServiceStub(connection.channel)
    return connection.unary(stub.GetStats, retrieval_pb2.GetStatsRequest(), "read", poll=poll)


def test_a_polled_call_answers_and_was_checked_before_it_started(slow_stats):
    servicer, connection = slow_stats(1.5)
    polls = []
    with connection:
        assert _stats(connection, lambda: polls.append(servicer.calls)).documents == 3
    # The first check came before the server saw the call, the others while it ran.
    assert polls[0] == 0 and len(polls) >= 2 and servicer.calls == 1


def test_what_poll_raises_cancels_the_call_on_the_server(slow_stats):
    servicer, connection = slow_stats(30)
    polls = 0

    def poll() -> None:
        nonlocal polls
        polls += 1
        if polls == 2:
            raise Stopped("the job was cancelled")

    started = time.monotonic()
    with connection, pytest.raises(Stopped):
        _stats(connection, poll)
    assert time.monotonic() - started < 10
    assert servicer.cancelled.wait(5) and servicer.calls == 1


def test_a_refusing_poll_makes_no_call(slow_stats):
    servicer, connection = slow_stats(30)

    def poll() -> None:
        raise Stopped("budget spent")

    with connection, pytest.raises(Stopped):
        _stats(connection, poll)
    assert servicer.calls == 0
