"""The programs' LM: the platform's own InferenceService over gRPC (any engine, any LoRA adapter), no
hosted API and no keys. It plugs into DSPy 3.4 the supported way: an engine with
`complete(Request) -> Response` given to a `dspy.LM` subclass (DSPy deprecates overriding
`BaseLM.forward`). Every call and token is counted, for the cost recorded with a program."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dspy
from dspy.lm15 import Message, Request, Response, TextPart, Usage, response_to_events

from tutorforge.artifacts.programs import TeachingProgram
from tutorforge.client.inference import InferenceClient
from tutorforge.core.convert import program_to_proto
from tutorforge.core.errors import FailedPrecondition, ResourceExhausted, TutorforgeError, status_of
from tutorforge.v1 import common_pb2, inference_pb2

# DSPy logs a warning for every reply cut by max_tokens; our budgets cut replies on purpose.
logging.getLogger("dspy.clients.lm").setLevel(logging.ERROR)

_FINISH = {
    inference_pb2.FINISH_REASON_STOP: "stop",
    inference_pb2.FINISH_REASON_LENGTH: "length",
}


class BudgetExhausted(ResourceExhausted):
    """An LM budget ran out. A run turns it into an early stop that keeps the best program found so far."""


@dataclass(frozen=True)
class Passage:
    tag: str
    document_id: str
    text: str


@dataclass(frozen=True)
class TutorReply:
    text: str
    passages: tuple[Passage, ...]
    prompt_tokens: int
    completion_tokens: int


@dataclass
class LmUsage:
    """Calls and tokens spent through one or more LMs (thread-safe), and optional caps on them."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Totals at which `check` refuses further calls; 0 = no cap.
    call_limit: int = 0
    token_limit: int = 0
    # Why `check` first refused a call; empty while within the caps.
    exhausted: str = ""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, prompt_tokens: int, completion_tokens: int) -> None:
        with self._lock:
            self.calls += 1
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens

    def limit(self, calls: int = 0, tokens: int = 0) -> None:
        """Allow `calls` more calls and `tokens` more tokens from now on (0 = no cap)."""
        with self._lock:
            self.call_limit = self.calls + calls if calls else 0
            self.token_limit = self.total_tokens + tokens if tokens else 0

    def check(self) -> None:
        """Raises BudgetExhausted once a cap is reached. Called before and while waiting for each call, so
        concurrent calls stop as soon as one of them reaches a cap."""
        with self._lock:
            if self.call_limit and self.calls >= self.call_limit:
                reason = f"LM-call budget reached ({self.calls} calls)"
            elif self.token_limit and self.total_tokens >= self.token_limit:
                reason = f"LM-token budget reached ({self.total_tokens} tokens)"
            else:
                return
            self.exhausted = self.exhausted or reason
        raise BudgetExhausted(reason)


class TutorClient:
    """Tutor turns through `InferenceService.Chat` — the path chatbots take: a program (stored or inline),
    a LoRA adapter, retrieval with citations. Evaluations and the teaching predictor of an optimizer both
    answer through it, so what they score is what chat serves. Calls go through the client SDK (deadlines,
    retries, domain errors); each is counted in `usage`."""

    def __init__(
        self,
        inference: InferenceClient,
        usage: LmUsage | None = None,
        before_call: Callable[[], None] | None = None,
    ):
        self.inference = inference
        self.usage = usage or LmUsage()
        # Raises to stop work (e.g. a cancelled job): checked before and during every call.
        self.before_call = before_call

    def reply(
        self,
        messages: list[dict[str, str]],
        *,
        adapter: str = "",
        program: str | TeachingProgram = "",
        retrieval: bool = True,
        max_tokens: int = 0,
        temperature: float = 0.0,
    ) -> TutorReply:
        reply = self.chat(
            messages,
            adapter=adapter,
            program=program_to_proto(program) if isinstance(program, TeachingProgram) else program,
            retrieval=retrieval,
            max_tokens=max_tokens,
            temperature=temperature or None,
        )
        usage = reply.summary.usage
        return TutorReply(
            text=reply.message.content,
            passages=tuple(Passage(c.tag, c.document_id, c.text) for c in reply.citations),
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
        )

    def chat(self, messages: list[Any], **options: Any) -> inference_pb2.ChatResponse:
        """One counted Chat call (options as `InferenceClient.chat`); `before_call` is polled while it runs,
        so a cancelled job stops generating."""
        reply = self.inference.chat(messages, poll=self.before_call, **options)
        usage = reply.summary.usage
        self.usage.add(usage.prompt_tokens, usage.completion_tokens)
        return reply


class InferenceEngine:
    """One DSPy request = one `InferenceService.Chat` call with the configured LoRA adapter, the messages
    as DSPy's adapter rendered them (the optimizers' own prompts; tutor turns go through TutorClient)."""

    def __init__(self, tutor: TutorClient, adapter: str = ""):
        self.tutor = tutor
        self.adapter = adapter

    @property
    def usage(self) -> LmUsage:
        return self.tutor.usage

    def complete(self, request: Request) -> Response:
        messages = []
        if request.system:
            system = (
                request.system if isinstance(request.system, str) else "".join(p.text for p in request.system)
            )
            messages.append(common_pb2.ChatMessage(role="system", content=system))
        for message in request.messages:
            # "developer" turns are instructions: the chat template knows them as system turns.
            role = "system" if message.role == "developer" else message.role
            messages.append(common_pb2.ChatMessage(role=role, content=message.text or ""))
        config = request.config
        reply = self.tutor.chat(
            messages,
            adapter=self.adapter,
            retrieval=False,
            max_tokens=config.max_tokens or 0,
            temperature=float(config.temperature) if config.temperature else None,
            seed=int(config.seed) if config.seed is not None else None,
            parameters={
                "stop": list(config.stop or ()),
                **({"top_p": float(config.top_p)} if config.top_p is not None else {}),
            },
        )
        usage = reply.summary.usage
        return Response(
            id=None,
            model=request.model,
            message=Message.assistant(TextPart(reply.message.content)),
            finish_reason=_FINISH.get(reply.summary.finish_reason, "stop"),
            usage=Usage(input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens),
        )

    def stream(self, request: Request):
        return response_to_events(self.complete(request))

    def close(self) -> None:
        """The channel belongs to the caller."""


class InferenceLM(dspy.LM):
    """A `dspy.LM` answered by the InferenceService with `adapter` (empty = base model).

    Greedy by default; DSPy's response cache is off so every call is a real generation (and counted).
    `tutor` also answers the teaching predictor's turns (TutorChatFormat), with the same adapter."""

    def __init__(
        self,
        tutor: TutorClient,
        adapter: str = "",
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        retrieval: bool = True,
    ):
        super().__init__(
            model=f"tutorforge/{adapter or 'base'}",
            engine=InferenceEngine(tutor, adapter),
            cache=False,
            num_retries=0,
            max_tokens=max_tokens,
            temperature=temperature,
        )
        self.tutor = tutor
        self.adapter = adapter
        self.retrieval = retrieval
        # The decoding teaching turns are answered with (an optimization run chooses it before compiling).
        self.frequency_penalty = 0.0

    @property
    def usage(self) -> LmUsage:
        return self.tutor.usage


def root_cause(error: BaseException) -> BaseException:
    """The error that started a chain: DSPy wraps engine failures (our statuses) in its own LM errors."""
    seen = set()
    while error.__cause__ is not None and id(error) not in seen:
        seen.add(id(error))
        error = error.__cause__
    return error


def describe_error(error: BaseException) -> str:
    """A failure's message as a gRPC status would say it."""
    code, message = status_of(root_cause(error))
    return f"{code.name}: {message}"


def as_domain_error(error: BaseException, context: str) -> TutorforgeError:
    """The failure behind a DSPy error (a downstream status, or ours) as a domain error with the same code."""
    root = root_cause(error)
    if isinstance(root, TutorforgeError):
        return type(root)(f"{context}: {root.message}")
    code, message = status_of(root)
    kinds = {kind.code: kind for kind in TutorforgeError.__subclasses__()}
    return kinds.get(code, FailedPrecondition)(f"{context}: {message}")
