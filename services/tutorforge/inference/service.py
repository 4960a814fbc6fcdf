"""The inference service's domain logic, shared by the gRPC servicer and the OpenAI-compatible HTTP door."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from tutorforge.artifacts.adapters import AdapterRegistry
from tutorforge.artifacts.programs import MAX_PENALTY, ProgramRepository, TeachingProgram, penalty_in_range
from tutorforge.client.retrieval import RetrievalClient
from tutorforge.core.errors import FailedPrecondition, InvalidArgument
from tutorforge.core.names import NAME_PATTERN
from tutorforge.core.paging import MAX_PAGE_SIZE, keyset_page
from tutorforge.core.runtime import Runtime
from tutorforge.core.settings import Settings
from tutorforge.core.teaching import (
    NO_MATERIAL_NOTICE,
    Citation,
    RetrievalOptions,
    Retriever,
    build_prompt,
    chat_retrieval,
    retrieval_query,
    validate_messages,
)
from tutorforge.core.telemetry import metrics, tracing
from tutorforge.inference.adapters import AdapterManager
from tutorforge.inference.engine import Engine, create_engine
from tutorforge.inference.types import AdapterStatus, GenerationRequest, GenerationStream, SamplingParams

MAX_STOP_STRINGS = 8


def _name(adapter: AdapterStatus) -> str:
    return adapter.name

MAX_STOP_CHARS = 200
# OpenAI's limit on top_logprobs.
MAX_TOP_LOGPROBS = 20


@dataclass
class ChatTurn:
    """A started tutor reply: the passages it is grounded on, and the stream of its tokens.

    `preamble` is text the reply starts with before the model's tokens (the notice that the course
    material has nothing on the question): doors send it first."""

    citations: list[Citation]
    stream: GenerationStream
    preamble: str = ""


class InferenceService:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        adapters: AdapterManager,
        retriever: Retriever | None = None,
        programs: ProgramRepository | None = None,
    ):
        self.settings = settings
        self.engine = engine
        self.adapters = adapters
        self.retriever = retriever
        self.programs = programs
        metrics.watch_engine(engine)

    @classmethod
    def from_runtime(cls, runtime: Runtime) -> InferenceService:
        settings = runtime.settings
        engine = create_engine(settings)
        return cls(
            settings,
            engine,
            AdapterManager(AdapterRegistry(runtime.store), engine, settings),
            Retriever(RetrievalClient(runtime.connection("retrieval"))),
            ProgramRepository(runtime.store),
        )

    @property
    def base_model(self) -> str:
        return self.engine.base_model

    def sampling(
        self,
        max_tokens: int = 0,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: Sequence[str] = (),
        seed: int | None = None,
        ignore_eos: bool = False,
        logprobs: int | None = None,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
    ) -> SamplingParams:
        """Validated sampling parameters; unset values take the configured defaults."""
        limit = self.settings.inference.max_new_tokens_limit
        if max_tokens < 0 or max_tokens > limit:
            raise InvalidArgument(f"max_tokens {max_tokens} is out of range: use 1..{limit} (0 = default)")
        if temperature is not None and (not math.isfinite(temperature) or not 0 <= temperature <= 10):
            raise InvalidArgument(f"temperature {temperature} is out of range: use 0 (greedy) .. 10")
        if top_p is not None and (not math.isfinite(top_p) or not 0 < top_p <= 1):
            raise InvalidArgument(f"top_p {top_p} is out of range: use a value in (0, 1]")
        stops = tuple(stop)
        if len(stops) > MAX_STOP_STRINGS or any(not s or len(s) > MAX_STOP_CHARS for s in stops):
            raise InvalidArgument(
                f"stop takes at most {MAX_STOP_STRINGS} non-empty strings of at most {MAX_STOP_CHARS} characters"
            )
        if logprobs is not None and not 0 <= logprobs <= MAX_TOP_LOGPROBS:
            raise InvalidArgument(f"top_logprobs {logprobs} is out of range: use 0..{MAX_TOP_LOGPROBS}")
        for name, penalty in (("frequency_penalty", frequency_penalty), ("presence_penalty", presence_penalty)):
            if not penalty_in_range(penalty):
                raise InvalidArgument(f"{name} {penalty:g} is out of range: use -{MAX_PENALTY:g}..{MAX_PENALTY:g} (0 = none)")
        return SamplingParams(
            logprobs=logprobs,
            max_tokens=max_tokens or self.settings.inference.default_max_tokens,
            temperature=temperature or 0.0,
            top_p=top_p or 1.0,
            stop=stops,
            seed=seed,
            ignore_eos=ignore_eos,
            frequency_penalty=frequency_penalty,
            presence_penalty=presence_penalty,
        )

    def generate(
        self, prompt: str, params: SamplingParams, adapter: str = "", fallback_to_base: bool = False
    ) -> GenerationStream:
        """Complete a raw prompt (no chat template)."""
        if not prompt.strip():
            raise InvalidArgument("prompt is empty: send the text to complete")
        return self._submit(GenerationRequest(params=params, prompt=prompt), adapter, fallback_to_base)

    @tracing.traced("chat")
    def chat(
        self,
        messages: list[dict[str, str]],
        params: SamplingParams,
        adapter: str = "",
        fallback_to_base: bool = False,
        retrieval: RetrievalOptions | None = None,
        system_prompt: str = "",
        program: str | TeachingProgram = "",
    ) -> ChatTurn:
        """One tutor turn: retrieve passages for the student's question, then answer grounded on them.

        `program` is a stored program's reference (NAME or NAME@VERSION) or an inline one; either is
        executed by `build_prompt`, so a program scored by an evaluation is served exactly so."""
        validate_messages(messages)
        resolved = self.resolve_program(program)
        if resolved is not None:
            adapter = adapter or resolved.adapter
            # The program was scored with replies of at most this length; longer ones would be another program.
            if resolved.lm.max_tokens and params.max_tokens > resolved.lm.max_tokens:
                params = replace(params, max_tokens=resolved.lm.max_tokens)
            # Likewise its frequency penalty, unless the request sets its own.
            if not params.frequency_penalty:
                params = replace(params, frequency_penalty=resolved.lm.frequency_penalty)
        citations: list[Citation] = []
        preamble = ""
        if retrieval is not None and retrieval.enabled:
            if self.retriever is None:
                raise FailedPrecondition("retrieval is not configured for this inference service")
            citations = self.retriever.search(retrieval_query(messages), chat_retrieval(retrieval, self.settings.inference))
            # A structured (JSON) reply must stay a valid document: the model is told instead.
            structured = params.response_format is not None and params.response_format.structured
            preamble = "" if citations or structured else NO_MATERIAL_NOTICE
        missing = retrieval is not None and retrieval.enabled and not citations
        prompt = build_prompt(messages, citations, system_prompt, resolved, material_missing=missing)
        stream = self._submit(GenerationRequest(params=params, messages=prompt), adapter, fallback_to_base)
        return ChatTurn(citations=citations, stream=stream, preamble=preamble)

    def resolve_program(self, program: str | TeachingProgram) -> TeachingProgram | None:
        if not program:
            return None
        if isinstance(program, str):
            if self.programs is None:
                raise FailedPrecondition(f"program {program!r} cannot be used: this server has no program store")
            _, program = self.programs.load(program)
        if program.base_model and program.base_model != self.base_model:
            raise FailedPrecondition(
                f"program {program.name or '(inline)'} was compiled for base model {program.base_model!r}, but this "
                f"server serves {self.base_model!r}: compile it again against this model"
            )
        return program

    def _submit(self, request: GenerationRequest, adapter: str, fallback_to_base: bool) -> GenerationStream:
        if request.params.logprobs is not None and not getattr(self.engine, "reports_logprobs", False):
            raise FailedPrecondition(
                f"logprobs are not available with the {self.engine.kind} engine: send the request without "
                "logprobs/top_logprobs, or serve with inference.engine=openai (vLLM)"
            )
        choice = self.adapters.choose(adapter, fallback_to_base)
        request.adapter = choice.adapter
        stream = self.engine.submit(request)
        stream.fell_back_to_base = choice.fell_back_to_base
        return stream

    def list_adapters(self, page_size: int = MAX_PAGE_SIZE, page_token: str = "") -> tuple[list[AdapterStatus], str]:
        """Adapters by name after the one `page_token` names, and the next token ("" on the last page)."""
        return keyset_page(self.adapters.list(), _name, page_size, page_token, token_pattern=NAME_PATTERN)

    def load_adapter(self, name: str, version: str = "") -> AdapterStatus:
        return self.adapters.load(name, version)

    def unload_adapter(self, name: str) -> AdapterStatus:
        return self.adapters.unload(name)

    def close(self) -> None:
        self.engine.close()
