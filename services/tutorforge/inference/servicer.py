"""gRPC servicer of tutorforge.v1.InferenceService: proto ⇄ domain translation only."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator

import grpc

from tutorforge.artifacts.programs import TeachingProgram
from tutorforge.core.convert import program_from_proto
from tutorforge.core.errors import InvalidArgument
from tutorforge.core.runtime import Runtime
from tutorforge.core.teaching import Citation, RetrievalOptions
from tutorforge.inference.service import ChatTurn, InferenceService
from tutorforge.inference.structured import parse_response_format
from tutorforge.inference.types import (
    AdapterStatus,
    GenerationStream,
    GenerationSummary,
    ResponseFormat,
    SamplingParams,
    TokenEvent,
)
from tutorforge.v1 import common_pb2, inference_pb2, inference_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "tutorforge.v1.InferenceService"
_FINISH = {
    "stop": inference_pb2.FINISH_REASON_STOP,
    "length": inference_pb2.FINISH_REASON_LENGTH,
    "cancelled": inference_pb2.FINISH_REASON_CANCELLED,
}


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, service: InferenceService):
        self.service = service

    def Generate(self, request: inference_pb2.GenerateRequest, context: grpc.ServicerContext) -> inference_pb2.GenerateResponse:
        stream = self._generate(request, context)
        text, summary = stream.collect()
        return inference_pb2.GenerateResponse(text=text, summary=summary_to_proto(summary))

    def GenerateStream(
        self, request: inference_pb2.GenerateStreamRequest, context: grpc.ServicerContext
    ) -> Iterator[inference_pb2.GenerateStreamResponse]:
        for event in self._generate(request, context):
            if isinstance(event, TokenEvent):
                yield inference_pb2.GenerateStreamResponse(token=inference_pb2.TokenDelta(text=event.text, token_id=event.token_id))
            else:
                yield inference_pb2.GenerateStreamResponse(summary=summary_to_proto(event))

    def Chat(self, request: inference_pb2.ChatRequest, context: grpc.ServicerContext) -> inference_pb2.ChatResponse:
        turn = self._chat(request, context)
        text, summary = turn.stream.collect()
        return inference_pb2.ChatResponse(
            message=common_pb2.ChatMessage(role="assistant", content=turn.preamble + text),
            citations=[citation_to_proto(c) for c in turn.citations],
            summary=summary_to_proto(summary),
        )

    def ChatStream(
        self, request: inference_pb2.ChatStreamRequest, context: grpc.ServicerContext
    ) -> Iterator[inference_pb2.ChatStreamResponse]:
        turn = self._chat(request, context)
        if turn.citations:
            yield inference_pb2.ChatStreamResponse(
                citations=inference_pb2.CitationList(citations=[citation_to_proto(c) for c in turn.citations])
            )
        if turn.preamble:
            yield inference_pb2.ChatStreamResponse(token=inference_pb2.TokenDelta(text=turn.preamble, token_id=-1))
        for event in turn.stream:
            if isinstance(event, TokenEvent):
                yield inference_pb2.ChatStreamResponse(token=inference_pb2.TokenDelta(text=event.text, token_id=event.token_id))
            else:
                yield inference_pb2.ChatStreamResponse(summary=summary_to_proto(event))

    def ListAdapters(
        self, request: inference_pb2.ListAdaptersRequest, context: grpc.ServicerContext
    ) -> inference_pb2.ListAdaptersResponse:
        adapters, token = self.service.list_adapters(request.page_size, request.page_token)
        return inference_pb2.ListAdaptersResponse(
            adapters=[adapter_to_proto(a) for a in adapters],
            base_model=self.service.base_model,
            engine=self.service.engine.kind,
            next_page_token=token,
        )

    def LoadAdapter(self, request: inference_pb2.LoadAdapterRequest, context: grpc.ServicerContext) -> inference_pb2.LoadAdapterResponse:
        return inference_pb2.LoadAdapterResponse(adapter=adapter_to_proto(self.service.load_adapter(request.name, request.version)))

    def UnloadAdapter(
        self, request: inference_pb2.UnloadAdapterRequest, context: grpc.ServicerContext
    ) -> inference_pb2.UnloadAdapterResponse:
        return inference_pb2.UnloadAdapterResponse(adapter=adapter_to_proto(self.service.unload_adapter(request.name)))

    def _generate(self, request: inference_pb2.GenerateRequest, context: grpc.ServicerContext) -> GenerationStream:
        stream = self.service.generate(
            request.prompt, self._sampling(request.parameters), request.model.adapter, request.model.fallback_to_base
        )
        return _tie_to_call(stream, context)

    def _chat(self, request: inference_pb2.ChatRequest, context: grpc.ServicerContext) -> ChatTurn:
        options = request.retrieval
        turn = self.service.chat(
            [{"role": m.role, "content": m.content} for m in request.messages],
            self._sampling(request.parameters),
            request.model.adapter,
            request.model.fallback_to_base,
            RetrievalOptions(
                enabled=options.enabled,
                limit=options.limit,
                score_threshold=options.score_threshold if options.HasField("score_threshold") else None,
                filters=list(options.filters),
                mode=options.mode,
            ),
            request.system_prompt,
            _program(request),
        )
        _tie_to_call(turn.stream, context)
        return turn

    def _sampling(self, parameters: inference_pb2.GenerationParameters) -> SamplingParams:
        params = self.service.sampling(
            max_tokens=parameters.max_tokens,
            temperature=parameters.temperature if parameters.HasField("temperature") else None,
            top_p=parameters.top_p if parameters.HasField("top_p") else None,
            stop=list(parameters.stop),
            seed=parameters.seed if parameters.HasField("seed") else None,
            ignore_eos=parameters.ignore_eos,
            frequency_penalty=parameters.frequency_penalty,
            presence_penalty=parameters.presence_penalty,
        )
        if parameters.HasField("response_format"):
            params = dataclasses.replace(params, response_format=response_format_from_proto(parameters.response_format))
        return params


def _program(request: inference_pb2.ChatRequest) -> str | TeachingProgram:
    if not request.HasField("inline_program"):
        return request.program
    if request.program:
        raise InvalidArgument("program and inline_program are exclusive: name a stored program or give one inline")
    return program_from_proto(request.inline_program)


_RESPONSE_FORMAT_TYPES = {
    inference_pb2.RESPONSE_FORMAT_TYPE_UNSPECIFIED: "text",
    inference_pb2.RESPONSE_FORMAT_TYPE_TEXT: "text",
    inference_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT: "json_object",
    inference_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA: "json_schema",
}


def response_format_from_proto(response_format: inference_pb2.ResponseFormat) -> ResponseFormat | None:
    kind = _RESPONSE_FORMAT_TYPES.get(response_format.type, str(response_format.type))
    return parse_response_format(kind, response_format.schema, response_format.name)


def _tie_to_call(stream: GenerationStream, context: grpc.ServicerContext) -> GenerationStream:
    """A call that ends early (client cancel, deadline) cancels its generation and frees its slot."""
    if not context.add_callback(stream.cancel):
        stream.cancel()
    return stream


def summary_to_proto(summary: GenerationSummary) -> inference_pb2.GenerationSummary:
    return inference_pb2.GenerationSummary(
        usage=common_pb2.Usage(
            prompt_tokens=summary.prompt_tokens,
            completion_tokens=summary.completion_tokens,
            total_tokens=summary.total_tokens,
        ),
        finish_reason=_FINISH[summary.finish_reason],
        adapter=summary.adapter,
        fell_back_to_base=summary.fell_back_to_base,
        time_to_first_token_seconds=summary.time_to_first_token,
        duration_seconds=summary.duration,
    )


def citation_to_proto(citation: Citation) -> inference_pb2.Citation:
    return inference_pb2.Citation(
        tag=citation.tag,
        document_id=citation.document_id,
        chunk_index=citation.chunk_index,
        source=citation.source,
        score=citation.score,
        text=citation.text,
    )


def adapter_to_proto(adapter: AdapterStatus) -> inference_pb2.AdapterInfo:
    return inference_pb2.AdapterInfo(
        name=adapter.name,
        version=adapter.version,
        base_model=adapter.base_model,
        loaded=adapter.loaded,
        registered=adapter.registered,
        rank=adapter.rank,
        target_modules=adapter.target_modules,
        metadata=adapter.metadata,
        files=adapter.files,
        created_at_unix=int(adapter.created_at),
    )


def register(server: grpc.Server, runtime: Runtime) -> str:
    service = InferenceService.from_runtime(runtime)
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(InferenceServicer(service), server)
    runtime.on_shutdown(service.close)
    if runtime.settings.server.http_port:
        from tutorforge.core.access import AccessPolicy
        from tutorforge.inference.http import start_http_server

        server_settings = runtime.settings.server
        http = start_http_server(
            service, server_settings.host, server_settings.http_port, connection=runtime.connection,
            access=AccessPolicy.from_settings(server_settings), tls=runtime.settings.tls,
        )
        runtime.on_shutdown(http.stop)
    return SERVICE_NAME
