"""Long-running jobs (dataset builds, training runs, optimization and evaluation runs) seen the same way
from every service: a `JobHandle` to `get`, `watch`, `wait` for and `cancel` a job, over the job RPCs every
job-running service serves with the same messages (jobs.proto)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc

from tutorforge.client.connection import Connection
from tutorforge.client.convert import enum_value
from tutorforge.core.errors import TutorforgeError, Unavailable, error_for_status
from tutorforge.v1 import common_pb2, jobs_pb2

TERMINAL = frozenset({common_pb2.JOB_STATE_SUCCEEDED, common_pb2.JOB_STATE_FAILED, common_pb2.JOB_STATE_CANCELLED})


def state_name(state: int) -> str:
    """'succeeded', 'failed', ... for a JobState value."""
    return common_pb2.JobState.Name(state).removeprefix("JOB_STATE_").lower()


class JobFailed(TutorforgeError):
    """`wait` found the job FAILED or CANCELLED; `job` is its final record (error, metrics, labels)."""

    code = grpc.StatusCode.ABORTED

    def __init__(self, job: common_pb2.Job):
        super().__init__(f"{job.kind or 'job'} {job.id} ended {state_name(job.state)}: {job.error or job.message}")
        self.job = job


def finished(job: common_pb2.Job, check: bool) -> common_pb2.Job:
    """`job`, or JobFailed when `check` and it did not succeed."""
    if check and job.state != common_pb2.JOB_STATE_SUCCEEDED:
        raise JobFailed(job)
    return job


@contextmanager
def waiting(job_id: str, timeout: float | None) -> Iterator[None]:
    """Around a wait's watch (sync or asyncio): a `timeout` that runs out says the job is still running."""
    try:
        yield
    except TutorforgeError as error:
        if error.code != grpc.StatusCode.DEADLINE_EXCEEDED:
            raise
        raise error_for_status(grpc.StatusCode.DEADLINE_EXCEEDED, f"job {job_id} still running after {timeout} s") from error


class WatchCursor:
    """Where a watch of one job stands, for the sync and the asyncio watch loops alike: each (re)opened
    WatchJob stream asks for the events after the last one delivered, within what is left of `timeout`.
    A stream cut by an unavailable server after some events is resumed (events are durable, so nothing is
    lost or repeated); one cut before any event is not, since the connection's retries already ran out."""

    def __init__(self, job_id: str, after_sequence: int = 0, timeout: float | None = None):
        self.job_id = job_id
        self.after_sequence = after_sequence
        self._opened_at = after_sequence
        self._deadline = None if timeout is None else time.monotonic() + timeout

    def open(self) -> tuple[jobs_pb2.WatchJobRequest, float | None]:
        """The request and timeout of the next stream."""
        self._opened_at = self.after_sequence
        left = None if self._deadline is None else max(0.001, self._deadline - time.monotonic())
        return jobs_pb2.WatchJobRequest(job_id=self.job_id, after_sequence=self.after_sequence), left

    def deliver(self, reply: jobs_pb2.WatchJobResponse) -> common_pb2.JobEvent:
        self.after_sequence = reply.event.sequence
        return reply.event

    def resume(self, error: Unavailable) -> None:
        """Return to reopen the stream cut by `error`, or raise it when that stream delivered nothing."""
        if self.after_sequence == self._opened_at:
            raise error


class JobClient:
    """What every job-running service's client shares: `job(id)`, `get_job`, `jobs`, `watch_job`, `cancel_job`."""

    def __init__(self, connection: Connection, stub: Any):
        self.connection = connection
        self.stub = stub

    def job(self, job: str | common_pb2.Job) -> JobHandle:
        """A handle on a job of this service, by id or record."""
        return JobHandle(self, job if isinstance(job, common_pb2.Job) else common_pb2.Job(id=job))

    def get_job(self, job_id: str) -> common_pb2.Job:
        return self.connection.unary(self.stub.GetJob, jobs_pb2.GetJobRequest(job_id=job_id), "read").job

    def jobs(self, state: str | int = "unspecified", kind: str = "", page_size: int = 100) -> Iterator[common_pb2.Job]:
        """This service's jobs, newest first, optionally of one kind and in one state (queued, running, ...)."""
        wanted = enum_value(common_pb2.JobState, "JOB_STATE_", state, "state")
        pages = self.connection.pages(
            self.stub.ListJobs, lambda token: jobs_pb2.ListJobsRequest(page_size=page_size, page_token=token, state=wanted, kind=kind)
        )
        return (job for page in pages for job in page.jobs)

    def watch_job(self, job_id: str, after_sequence: int = 0, timeout: float | None = None) -> Iterator[common_pb2.JobEvent]:
        """The job's past events after `after_sequence`, then new ones until it ends. A stream cut by an
        unavailable server after some events is resumed after the last one (WatchCursor); refusals before
        any event are retried by the connection's policy."""
        cursor = WatchCursor(job_id, after_sequence, timeout)
        while True:
            request, left = cursor.open()
            try:
                for reply in self.connection.stream(self.stub.WatchJob, request, "watch", timeout=left):
                    yield cursor.deliver(reply)
                return
            except Unavailable as error:
                cursor.resume(error)

    def cancel_job(self, job_id: str) -> common_pb2.Job:
        return self.connection.unary(self.stub.CancelJob, jobs_pb2.CancelJobRequest(job_id=job_id), "write").job


class JobHandle:
    """One job: `watch()` its events, `wait()` for its end, `get()` its record, `cancel()` it."""

    def __init__(self, client: JobClient, job: common_pb2.Job):
        self.client = client
        # The latest record seen (the start RPC's reply, then what get/wait returned).
        self.job = job

    @property
    def id(self) -> str:
        return self.job.id

    def __repr__(self) -> str:
        return f"JobHandle({self.job.kind or 'job'} {self.id}, {state_name(self.job.state)})"

    def get(self) -> common_pb2.Job:
        self.job = self.client.get_job(self.id)
        return self.job

    def watch(self, after_sequence: int = 0, timeout: float | None = None) -> Iterator[common_pb2.JobEvent]:
        return self.client.watch_job(self.id, after_sequence, timeout)

    def wait(
        self,
        timeout: float | None = None,
        *,
        check: bool = True,
        on_event: Callable[[common_pb2.JobEvent], None] | None = None,
    ) -> common_pb2.Job:
        """Follow the job to its end (calling `on_event` with each event) and return its final record;
        JobFailed when it did not succeed (unless `check=False`), DEADLINE_EXCEEDED after `timeout` s."""
        with waiting(self.id, timeout):
            for event in self.watch(timeout=timeout):
                if on_event is not None:
                    on_event(event)
        return self.finished(check=check)

    def finished(self, check: bool = True) -> common_pb2.Job:
        """The record of a job that has ended (e.g. after consuming `watch()`); JobFailed unless it succeeded."""
        return finished(self.get(), check)

    def cancel(self) -> common_pb2.Job:
        self.job = self.client.cancel_job(self.id)
        return self.job
