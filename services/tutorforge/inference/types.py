"""Domain objects shared by the engines, the tutor chat, the gRPC servicer and the HTTP door."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from tutorforge.core.teaching import Citation
from tutorforge.core.telemetry import metrics, tracing

FinishReason = Literal["stop", "length", "cancelled"]
NO_ADAPTER = ""


@dataclass(frozen=True)
class ResponseFormat:
    """What the reply must be: free text, any JSON object, or a JSON document valid against `schema`
    (JSON text, kept as a string so sampling parameters stay hashable)."""

    type: Literal["text", "json_object", "json_schema"] = "text"
    schema: str = ""
    # The schema's name (OpenAI's json_schema.name); informational.
    name: str = ""

    @property
    def structured(self) -> bool:
        return self.type != "text"


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    # 0 = greedy.
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # Keep generating past the end token (benchmarks that need a fixed number of tokens).
    ignore_eos: bool = False
    # None = free text.
    response_format: ResponseFormat | None = None
    # None = no log probabilities; k = each token's log probability and its k most likely alternatives.
    logprobs: int | None = None
    # OpenAI's penalties (-2..2, 0 = none): a token's logit is lowered by frequency_penalty times the
    # times this reply already holds it, and by presence_penalty once it holds it (the prompt is not counted).
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    @property
    def penalized(self) -> bool:
        return bool(self.frequency_penalty or self.presence_penalty)


@dataclass
class GenerationRequest:
    """Either a raw `prompt` (completed as is) or ChatML `messages` (rendered by the engine's template)."""

    params: SamplingParams
    prompt: str | None = None
    messages: list[dict[str, str]] | None = None
    # Adapter name; NO_ADAPTER ("") = the base model.
    adapter: str = NO_ADAPTER


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token's log probability and its most likely alternatives (token text, logprob)."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class TokenEvent:
    text: str
    token_id: int
    # The tokens behind `text` when the request asked for logprobs (an engine may send several at once).
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass
class GenerationSummary:
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason
    adapter: str = NO_ADAPTER
    fell_back_to_base: bool = False
    time_to_first_token: float = 0.0
    duration: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


Event = TokenEvent | GenerationSummary


class GenerationStream:
    """The consumer side of one generation: iterate for token events, then exactly one summary.

    The engine pushes events from its own thread; `cancel()` (client went away) frees the request's slot."""

    def __init__(self, adapter: str = NO_ADAPTER):
        self.adapter = adapter
        # Set by the service when the requested adapter was unavailable and the request allowed the base.
        self.fell_back_to_base = False
        self.submitted_at = time.perf_counter()
        self._events: queue.SimpleQueue[Event | BaseException] = queue.SimpleQueue()
        self._cancelled = threading.Event()
        # The submitter's trace context (None when tracing is off): parents the generation's spans.
        self.trace_parent = tracing.current()

    # Producer side.
    def put(self, event: Event | BaseException) -> None:
        if isinstance(event, GenerationSummary):
            metrics.observe_generation(self, event)
        elif isinstance(event, BaseException):
            metrics.observe_generation_error(self)
        self._events.put(event)

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    # Consumer side.
    def cancel(self) -> None:
        self._cancelled.set()

    def __iter__(self) -> Iterator[Event]:
        while True:
            event = self._events.get()
            if isinstance(event, BaseException):
                raise event
            if isinstance(event, GenerationSummary):
                event.fell_back_to_base = self.fell_back_to_base
                yield event
                return
            yield event

    def collect(self) -> tuple[str, GenerationSummary]:
        """Run to completion: the whole text and the summary."""
        parts = []
        for event in self:
            if isinstance(event, TokenEvent):
                parts.append(event.text)
            else:
                return "".join(parts), event
        raise RuntimeError("generation ended without a summary")


@dataclass
class ChatReply:
    content: str
    citations: list[Citation]
    summary: GenerationSummary


@dataclass
class AdapterStatus:
    """What ListAdapters reports for one adapter."""

    name: str
    version: str = ""
    base_model: str = ""
    loaded: bool = False
    registered: bool = False
    rank: int = 0
    target_modules: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    created_at: float = 0.0
