"""The programs' LM: the platform's own InferenceService over gRPC (any engine, any LoRA adapter), no
hosted API and no keys. It plugs into DSPy 3.4 the supported way: an engine with
`complete(Request) -> Response` given to a `dspy.LM` subclass (DSPy deprecates overriding
`BaseLM.forward`). Every call and token is counted, for the cost recorded with a program."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import dspy
import grpc
from dspy.lm15 import Message, Request, Response, TextPart, Usage, response_to_events

from tutorforge.core.errors import FailedPrecondition, TutorforgeError, status_of
from tutorforge.v1 import common_pb2, inference_pb2, inference_pb2_grpc

# DSPy logs a warning for every reply cut by max_tokens; our budgets cut replies on purpose.
logging.getLogger("dspy.clients.lm").setLevel(logging.ERROR)

_POLL_SECONDS = 1.0
_FINISH = {
    inference_pb2.FINISH_REASON_STOP: "stop",
    inference_pb2.FINISH_REASON_LENGTH: "length",
}


@dataclass
class LmUsage:
    """Calls and tokens spent through one or more LMs (thread-safe)."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

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


class InferenceEngine:
    """One DSPy request = one `InferenceService.Chat` call with the configured LoRA adapter."""

    def __init__(
        self,
        channel: grpc.Channel,
        adapter: str = "",
        usage: LmUsage | None = None,
        before_call: Callable[[], None] | None = None,
        timeout: float = 600.0,
    ):
        self.stub = inference_pb2_grpc.InferenceServiceStub(channel)
        self.adapter = adapter
        self.usage = usage or LmUsage()
        # Raises to stop work (e.g. a cancelled job): checked before and during every call.
        self.before_call = before_call
        self.timeout = timeout

    def complete(self, request: Request) -> Response:
        if self.before_call is not None:
            self.before_call()
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
        parameters = inference_pb2.GenerationParameters(
            max_tokens=config.max_tokens or 0, stop=list(config.stop or ())
        )
        if config.temperature:
            parameters.temperature = float(config.temperature)
        if config.top_p is not None:
            parameters.top_p = float(config.top_p)
        if config.seed is not None:
            parameters.seed = int(config.seed)
        call = self.stub.Chat.future(
            inference_pb2.ChatRequest(
                messages=messages,
                model=inference_pb2.ModelSelection(adapter=self.adapter),
                parameters=parameters,
            ),
            timeout=self.timeout,
        )
        reply = self._wait(call)
        usage = reply.summary.usage
        self.usage.add(usage.prompt_tokens, usage.completion_tokens)
        return Response(
            id=None,
            model=request.model,
            message=Message.assistant(TextPart(reply.message.content)),
            finish_reason=_FINISH.get(reply.summary.finish_reason, "stop"),
            usage=Usage(input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens),
        )

    def _wait(self, call: grpc.Future) -> inference_pb2.ChatResponse:
        """The reply; while waiting, `before_call` is polled so a cancelled job stops the generation too."""
        while self.before_call is not None:
            try:
                return call.result(timeout=_POLL_SECONDS)
            except grpc.FutureTimeoutError:
                try:
                    self.before_call()
                except BaseException:
                    call.cancel()
                    raise
        return call.result()

    def stream(self, request: Request):
        return response_to_events(self.complete(request))

    def close(self) -> None:
        """The channel belongs to the caller."""


class InferenceLM(dspy.LM):
    """A `dspy.LM` answered by the InferenceService with `adapter` (empty = base model).

    Greedy by default; DSPy's response cache is off so every call is a real generation (and counted)."""

    def __init__(
        self,
        channel: grpc.Channel,
        adapter: str = "",
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        usage: LmUsage | None = None,
        before_call: Callable[[], None] | None = None,
    ):
        engine = InferenceEngine(channel, adapter, usage=usage, before_call=before_call)
        super().__init__(
            model=f"tutorforge/{adapter or 'base'}",
            engine=engine,
            cache=False,
            num_retries=0,
            max_tokens=max_tokens,
            temperature=temperature,
        )

    @property
    def usage(self) -> LmUsage:
        return self.engine.usage


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
