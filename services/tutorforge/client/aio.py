"""asyncio clients where streaming matters: tutor chat (whole or token by token) and job watching,
with the same token, TLS, deadlines, retries and domain errors as the synchronous SDK."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Self, TypeVar

from grpc import aio

from tutorforge.client.connection import DEFAULT_ADDRESS, Endpoint, domain_error
from tutorforge.client.inference import chat_request
from tutorforge.client.jobs import WatchCursor, finished, waiting
from tutorforge.core.client import channel_options
from tutorforge.core.errors import Unavailable
from tutorforge.core.settings import TlsSettings
from tutorforge.core.telemetry import tracing
from tutorforge.v1 import (
    common_pb2,
    datasets_pb2_grpc,
    inference_pb2_grpc,
    jobs_pb2,
    optimization_pb2_grpc,
    training_pb2_grpc,
)
from tutorforge.v1 import inference_pb2 as pb

Reply = TypeVar("Reply")


class AsyncConnection(Endpoint):
    """An asyncio channel to one tutorforge server with the SDK's call policy."""

    def _open(self, token: str | None, tls: TlsSettings | None, max_message_bytes: int) -> aio.Channel:
        # grpc.aio has no channel interceptors for every call kind: the token travels as call metadata.
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        options, credentials = channel_options(max_message_bytes, tls)
        if credentials is None:
            return aio.insecure_channel(self.address, options=options)
        return aio.secure_channel(self.address, credentials, options=options)

    def metadata(self) -> list[tuple[str, str]]:
        metadata = list(self._metadata)
        return tracing.inject(metadata) if tracing.enabled() else metadata

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def unary(self, method: Callable[..., Awaitable[Reply]], request: Any, kind: str) -> Reply:
        attempt = 0
        while True:
            attempt += 1
            try:
                return await method(request, timeout=self.deadline(kind), metadata=self.metadata())
            except aio.AioRpcError as error:
                if error.code() not in self.retry.codes or attempt >= self.retry.attempts:
                    raise domain_error(error, self.address) from error
                await asyncio.sleep(self.retry.delay(attempt, error))

    async def stream(self, method: Callable[..., Any], request: Any, kind: str, timeout: float | None = None) -> AsyncIterator[Any]:
        """A server stream; refusals before the first message are retried, later failures raised."""
        attempt = 0
        while True:
            attempt += 1
            received = False
            try:
                call = method(request, timeout=timeout if timeout is not None else self.deadline(kind), metadata=self.metadata())
                async for reply in call:
                    received = True
                    yield reply
                return
            except aio.AioRpcError as error:
                if received or error.code() not in self.retry.codes or attempt >= self.retry.attempts:
                    raise domain_error(error, self.address) from error
                await asyncio.sleep(self.retry.delay(attempt, error))


class AsyncInferenceClient:
    def __init__(self, connection: AsyncConnection):
        self.connection = connection
        self.stub = inference_pb2_grpc.InferenceServiceStub(connection.channel)

    async def chat(self, conversation: str | Iterable[Any], **options: Any) -> pb.ChatResponse:
        """As InferenceClient.chat."""
        return await self.connection.unary(self.stub.Chat, chat_request(pb.ChatRequest, conversation, **options), "generate")

    def chat_stream(self, conversation: str | Iterable[Any], **options: Any) -> AsyncIterator[pb.ChatStreamResponse]:
        """As InferenceClient.chat_stream: citations, tokens, then the summary, as they come."""
        return self.connection.stream(self.stub.ChatStream, chat_request(pb.ChatStreamRequest, conversation, **options), "generate")


class AsyncJobs:
    """Watching and waiting for one service's jobs from asyncio (start them with the sync client)."""

    def __init__(self, connection: AsyncConnection, stub: Any):
        self.connection, self.stub = connection, stub

    async def get(self, job_id: str) -> common_pb2.Job:
        return (await self.connection.unary(self.stub.GetJob, jobs_pb2.GetJobRequest(job_id=job_id), "read")).job

    async def watch(self, job_id: str, after_sequence: int = 0, timeout: float | None = None) -> AsyncIterator[common_pb2.JobEvent]:
        """As JobClient.watch_job: past events after `after_sequence`, then new ones until the job ends."""
        cursor = WatchCursor(job_id, after_sequence, timeout)
        while True:
            request, left = cursor.open()
            try:
                async for reply in self.connection.stream(self.stub.WatchJob, request, "watch", timeout=left):
                    yield cursor.deliver(reply)
                return
            except Unavailable as error:
                cursor.resume(error)

    async def wait(self, job_id: str, timeout: float | None = None, *, check: bool = True) -> common_pb2.Job:
        """The job's final record once it ends; JobFailed when it did not succeed (unless check=False)."""
        with waiting(job_id, timeout):
            async for _ in self.watch(job_id, timeout=timeout):
                pass
        return finished(await self.get(job_id), check)


class AsyncTutorforge:
    """asyncio counterpart of Tutorforge: `inference` chat, and `datasets`/`training`/`optimization` jobs."""

    def __init__(self, address: str = DEFAULT_ADDRESS, **options: Any):
        self.connection = AsyncConnection(address, **options)
        channel = self.connection.channel
        self.inference = AsyncInferenceClient(self.connection)
        self.datasets = AsyncJobs(self.connection, datasets_pb2_grpc.DatasetServiceStub(channel))
        self.training = AsyncJobs(self.connection, training_pb2_grpc.TrainingServiceStub(channel))
        self.optimization = AsyncJobs(self.connection, optimization_pb2_grpc.OptimizationServiceStub(channel))

    async def close(self) -> None:
        await self.connection.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()
