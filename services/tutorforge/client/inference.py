"""InferenceClient: tutor chat with citations (whole or streamed), raw generation, adapters."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from tutorforge.client.connection import Connection
from tutorforge.client.convert import chat_messages, message
from tutorforge.core.paging import MAX_PAGE_SIZE
from tutorforge.v1 import inference_pb2 as pb
from tutorforge.v1 import inference_pb2_grpc


def chat_request(
    kind: type,
    conversation: str | Iterable[Any],
    *,
    adapter: str = "",
    fallback_to_base: bool = False,
    program: str | pb.TeachingProgram = "",
    system_prompt: str = "",
    retrieval: bool | pb.RetrievalOptions = True,
    max_tokens: int = 0,
    temperature: float | None = None,
    seed: int | None = None,
    parameters: pb.GenerationParameters | Mapping[str, Any] | None = None,
) -> Any:
    """A ChatRequest or ChatStreamRequest (`kind`): retrieval on with the tutor's calibrated defaults
    unless `retrieval` is False or RetrievalOptions; greedy unless `temperature`. `parameters` gives any
    other GenerationParameters fields (top_p, stop, response_format, ...). `program` is a stored program's
    name ("NAME" or "NAME@VERSION") or a TeachingProgram given inline."""
    given = message(pb.GenerationParameters, parameters, "parameters")
    parameters = pb.GenerationParameters()
    if given is not None:
        parameters.CopyFrom(given)
    parameters.max_tokens = max_tokens or parameters.max_tokens
    if temperature is not None:
        parameters.temperature = temperature
    if seed is not None:
        parameters.seed = seed
    options = retrieval if isinstance(retrieval, pb.RetrievalOptions) else pb.RetrievalOptions(enabled=bool(retrieval))
    return kind(
        messages=chat_messages(conversation),
        model=pb.ModelSelection(adapter=adapter, fallback_to_base=fallback_to_base),
        parameters=parameters,
        retrieval=options,
        system_prompt=system_prompt,
        **({"inline_program": program} if isinstance(program, pb.TeachingProgram) else {"program": program}),
    )


def _generate_request(
    kind: type, prompt: str, adapter: str, fallback_to_base: bool, max_tokens: int, parameters: Mapping[str, Any]
) -> Any:
    built = message(pb.GenerationParameters, {"max_tokens": max_tokens, **parameters}, "parameters")
    return kind(prompt=prompt, model=pb.ModelSelection(adapter=adapter, fallback_to_base=fallback_to_base), parameters=built)


class InferenceClient:
    def __init__(self, connection: Connection):
        self.connection = connection
        self.stub = inference_pb2_grpc.InferenceServiceStub(connection.channel)

    def chat(self, conversation: str | Iterable[Any], *, poll: Callable[[], None] | None = None, **options: Any) -> pb.ChatResponse:
        """The tutor's reply to a question (or to ChatML turns, the last one the student's), with the
        passages it cites. Options: adapter, fallback_to_base, program, system_prompt, retrieval,
        max_tokens, temperature, seed, parameters. `poll` (see Connection.unary) can stop a long reply."""
        request = chat_request(pb.ChatRequest, conversation, **options)
        return self.connection.unary(self.stub.Chat, request, "generate", poll=poll)

    def chat_stream(self, conversation: str | Iterable[Any], **options: Any) -> Iterator[pb.ChatStreamResponse]:
        """The same reply streamed: a `citations` event (retrieval on), `token` events, then a `summary`."""
        request = chat_request(pb.ChatStreamRequest, conversation, **options)
        return self.connection.stream(self.stub.ChatStream, request, "generate")

    def generate(
        self, prompt: str, *, adapter: str = "", fallback_to_base: bool = False, max_tokens: int = 0, **parameters: Any
    ) -> pb.GenerateResponse:
        """Raw completion of `prompt`; `parameters` are GenerationParameters fields (temperature, stop, ...)."""
        request = _generate_request(pb.GenerateRequest, prompt, adapter, fallback_to_base, max_tokens, parameters)
        return self.connection.unary(self.stub.Generate, request, "generate")

    def generate_stream(
        self, prompt: str, *, adapter: str = "", fallback_to_base: bool = False, max_tokens: int = 0, **parameters: Any
    ) -> Iterator[pb.GenerateStreamResponse]:
        """The same completion streamed: `token` events, then a `summary`."""
        request = _generate_request(pb.GenerateStreamRequest, prompt, adapter, fallback_to_base, max_tokens, parameters)
        return self.connection.stream(self.stub.GenerateStream, request, "generate")

    def adapters(self, page_size: int = MAX_PAGE_SIZE) -> pb.ListAdaptersResponse:
        """Registered and loaded adapters (every page), the base model and the engine."""
        first, *rest = self.connection.pages(
            self.stub.ListAdapters, lambda token: pb.ListAdaptersRequest(page_size=page_size, page_token=token)
        )
        for page in rest:
            first.adapters.extend(page.adapters)
        first.next_page_token = ""
        return first

    def load_adapter(self, name: str, version: str = "") -> pb.AdapterInfo:
        """Load an adapter (default its latest version) into the serving engine."""
        return self.connection.unary(self.stub.LoadAdapter, pb.LoadAdapterRequest(name=name, version=version), "write").adapter

    def unload_adapter(self, name: str) -> pb.AdapterInfo:
        return self.connection.unary(self.stub.UnloadAdapter, pb.UnloadAdapterRequest(name=name), "write").adapter
