"""Retries against a real gRPC server (loopback) that refuses first: UNAVAILABLE, or RESOURCE_EXHAUSTED
with the `retry-after-ms` hint that tutorforge's admission control sends; and a job watch cut mid-stream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from tutorforge.client import (
    Connection,
    DatasetsClient,
    InvalidArgument,
    RetrievalClient,
    RetryPolicy,
    TutorforgeError,
    Unavailable,
)
from tutorforge.client.aio import AsyncConnection, AsyncJobs
from tutorforge.core.admission import RETRY_AFTER_KEY
from tutorforge.v1 import common_pb2, datasets_pb2_grpc, jobs_pb2, retrieval_pb2, retrieval_pb2_grpc


class FlakyRetrieval(retrieval_pb2_grpc.RetrievalServiceServicer):
    """Answers GetStats with the given refusals first, then for real; records when each call came."""

    def __init__(self, refusals: list[tuple[grpc.StatusCode, int | None]]):
        self.refusals = list(refusals)
        self.calls: list[float] = []

    def GetStats(self, request, context):
        self.calls.append(time.monotonic())
        if self.refusals:
            code, retry_after_ms = self.refusals.pop(0)
            if retry_after_ms is not None:
                context.set_trailing_metadata(((RETRY_AFTER_KEY, str(retry_after_ms)),))
            context.abort(code, f"refused ({code.name})")
        return retrieval_pb2.GetStatsResponse(documents=7, store_backend="flaky")

    def Search(self, request, context):
        self.calls.append(time.monotonic())
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "query is required")


class CutWatch(datasets_pb2_grpc.DatasetServiceServicer):
    """WatchJob sends events 1-2 then drops the stream (UNAVAILABLE); resumed, sends what follows."""

    def __init__(self) -> None:
        self.after: list[int] = []

    def WatchJob(self, request, context) -> Iterator[jobs_pb2.WatchJobResponse]:
        self.after.append(request.after_sequence)
        for sequence in range(request.after_sequence + 1, 4):
            state = common_pb2.JOB_STATE_SUCCEEDED if sequence == 3 else common_pb2.JOB_STATE_RUNNING
            yield jobs_pb2.WatchJobResponse(event=common_pb2.JobEvent(job_id=request.job_id, sequence=sequence, state=state))
            if sequence == 2 and len(self.after) == 1:
                context.abort(grpc.StatusCode.UNAVAILABLE, "server going away")


class SlowWatch(datasets_pb2_grpc.DatasetServiceServicer):
    """A job that never ends within the test: one event, then silence."""

    def WatchJob(self, request, context) -> Iterator[jobs_pb2.WatchJobResponse]:
        yield jobs_pb2.WatchJobResponse(event=common_pb2.JobEvent(job_id=request.job_id, sequence=1))
        while context.is_active():
            time.sleep(0.05)


@pytest.fixture
def grpc_server():
    servers = []

    def _start(*servicers) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        for servicer in servicers:
            if isinstance(servicer, FlakyRetrieval):
                retrieval_pb2_grpc.add_RetrievalServiceServicer_to_server(servicer, server)
            else:
                datasets_pb2_grpc.add_DatasetServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield _start
    for server in servers:
        server.stop(0)


def test_unavailable_then_answer_is_retried_with_backoff(grpc_server) -> None:
    servicer = FlakyRetrieval([(grpc.StatusCode.UNAVAILABLE, None), (grpc.StatusCode.UNAVAILABLE, None)])
    address = grpc_server(servicer)
    with Connection(address, retry=RetryPolicy(attempts=4, initial_backoff=0.1, multiplier=2)) as connection:
        assert RetrievalClient(connection).stats().documents == 7
    assert len(servicer.calls) == 3
    gaps = [later - earlier for earlier, later in zip(servicer.calls, servicer.calls[1:])]
    # Backoff with jitter: 0.05-0.1 s, then 0.1-0.2 s.
    assert 0.05 <= gaps[0] < 0.5 and 0.1 <= gaps[1] < 0.7, gaps


def test_resource_exhausted_waits_for_the_servers_hint(grpc_server) -> None:
    servicer = FlakyRetrieval([(grpc.StatusCode.RESOURCE_EXHAUSTED, 400)])
    address = grpc_server(servicer)
    with Connection(address, retry=RetryPolicy(initial_backoff=0.01)) as connection:
        assert RetrievalClient(connection).stats().store_backend == "flaky"
    assert len(servicer.calls) == 2 and servicer.calls[1] - servicer.calls[0] >= 0.4


def test_retries_give_up_with_the_domain_error(grpc_server) -> None:
    servicer = FlakyRetrieval([(grpc.StatusCode.UNAVAILABLE, 0)] * 5)
    address = grpc_server(servicer)
    with Connection(address, retry=RetryPolicy(attempts=3)) as connection:
        with pytest.raises(Unavailable, match=f"cannot reach tutorforge at {address}"):
            RetrievalClient(connection).stats()
        assert len(servicer.calls) == 3
        # What the caller must fix is never retried.
        with pytest.raises(InvalidArgument, match="query is required"):
            RetrievalClient(connection).search("")
        assert len(servicer.calls) == 4


def test_a_cut_job_watch_resumes_after_the_last_event(grpc_server) -> None:
    servicer = CutWatch()
    address = grpc_server(servicer)
    with Connection(address, retry=RetryPolicy(initial_backoff=0.01)) as connection:
        events = list(DatasetsClient(connection).watch_job("job-1"))
    assert [event.sequence for event in events] == [1, 2, 3] and servicer.after == [0, 2]


def test_wait_gives_up_after_its_timeout(grpc_server) -> None:
    address = grpc_server(SlowWatch())
    seen = []
    with Connection(address) as connection, pytest.raises(TutorforgeError, match="job job-2 still running after 0.5 s") as caught:
        DatasetsClient(connection).job("job-2").wait(timeout=0.5, on_event=seen.append)
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED and [event.sequence for event in seen] == [1]


def test_the_asyncio_watch_resumes_and_times_out_the_same_way(grpc_server) -> None:
    # The asyncio jobs share the sync watch's cursor and wait's timeout: same resumption, same message.
    cut, slow = CutWatch(), SlowWatch()
    cut_address, slow_address = grpc_server(cut), grpc_server(slow)

    async def run() -> tuple[list[int], TutorforgeError]:
        async with AsyncConnection(cut_address, retry=RetryPolicy(initial_backoff=0.01)) as connection:
            jobs = AsyncJobs(connection, datasets_pb2_grpc.DatasetServiceStub(connection.channel))
            sequences = [event.sequence async for event in jobs.watch("job-1")]
        async with AsyncConnection(slow_address) as connection:
            jobs = AsyncJobs(connection, datasets_pb2_grpc.DatasetServiceStub(connection.channel))
            try:
                await jobs.wait("job-2", timeout=0.5)
            except TutorforgeError as error:
                return sequences, error
        raise AssertionError("wait returned before its timeout")

    sequences, error = asyncio.run(run())
    assert sequences == [1, 2, 3] and cut.after == [0, 2]
    assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED and "job job-2 still running after 0.5 s" in error.message
