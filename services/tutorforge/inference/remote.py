"""Remote engines: Hugging Face TGI (through `huggingface_hub.InferenceClient`) and OpenAI-compatible
servers such as vLLM or SGLang (through the `openai` client). Each request streams in a worker thread
that feeds the same `GenerationStream` the embedded engine produces."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tutorforge.core.chat_endpoint import schema_format, status_error
from tutorforge.core.errors import (
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    TutorforgeError,
    Unavailable,
)
from tutorforge.core.models import chat_model_name
from tutorforge.core.settings import Settings
from tutorforge.inference.decoding import StopMatcher
from tutorforge.inference.structured import openai_response_format, schema_of
from tutorforge.inference.types import (
    NO_ADAPTER,
    FinishReason,
    GenerationRequest,
    GenerationStream,
    GenerationSummary,
    TokenEvent,
    TokenLogprob,
)

log = logging.getLogger(__name__)

# What a remote worker yields: text pieces with token ids, then (prompt_tokens, completion_tokens, reason).
Piece = TokenEvent | tuple[int, int, FinishReason]


class _RemoteEngine:
    kind = ""
    loads_from_registry = False

    def __init__(self, settings: Settings):
        if not settings.inference.engine_url:
            raise FailedPrecondition(
                f"inference.engine={settings.inference.engine} needs inference.engine_url "
                "(TUTORFORGE_INFERENCE__ENGINE_URL), the base URL of the server"
            )
        self.url = settings.inference.engine_url.rstrip("/")
        self.base_model = chat_model_name(settings.models)
        self._limits = settings.inference
        # Requests in flight at once; beyond that the server would only queue them for us.
        self._slots = threading.BoundedSemaphore(settings.inference.max_batch_size + settings.inference.max_queue_size)

    def submit(self, request: GenerationRequest) -> GenerationStream:
        if request.prompt is not None and not request.prompt.strip():
            raise InvalidArgument("the prompt is empty: send some text to complete")
        if not self._slots.acquire(blocking=False):
            raise ResourceExhausted("the inference queue is full; retry with backoff")
        stream = GenerationStream(adapter=request.adapter)
        worker = threading.Thread(target=self._work, args=(request, stream), name=f"{self.kind}-request", daemon=True)
        worker.start()
        return stream

    def _work(self, request: GenerationRequest, stream: GenerationStream) -> None:
        first_at = 0.0
        completion = 0
        try:
            for piece in self._pieces(request):
                if stream.cancelled:
                    stream.put(self._summary(stream, 0, completion, "cancelled", first_at))
                    return
                if isinstance(piece, TokenEvent):
                    first_at = first_at or time.perf_counter()
                    completion += 1
                    stream.put(piece)
                else:
                    prompt_tokens, completion_tokens, reason = piece
                    stream.put(self._summary(stream, prompt_tokens, completion_tokens or completion, reason, first_at))
                    return
            stream.put(self._summary(stream, 0, completion, "stop", first_at))
        except Exception as error:  # noqa: BLE001 - every failure reaches the caller as a status
            stream.put(self._translate(error))
        finally:
            self._slots.release()

    @staticmethod
    def _summary(stream: GenerationStream, prompt: int, completion: int, reason: FinishReason, first_at: float) -> GenerationSummary:
        now = time.perf_counter()
        return GenerationSummary(
            prompt_tokens=prompt,
            completion_tokens=completion,
            finish_reason=reason,
            adapter=stream.adapter,
            time_to_first_token=(first_at or now) - stream.submitted_at,
            duration=now - stream.submitted_at,
        )

    def _translate(self, error: Exception) -> Exception:
        if isinstance(error, TutorforgeError):
            return error
        status = getattr(getattr(error, "response", None), "status_code", None) or getattr(error, "status_code", None)
        return status_error(status, f"{self.kind} server at {self.url}: {error}{_reason_of(error)}")

    def _pieces(self, request: GenerationRequest) -> Iterator[Piece]:
        raise NotImplementedError

    def probe(self) -> None:
        """Raise (Unavailable, NotFound, ...) unless the server answers; cheap, for checks up front."""
        raise NotImplementedError

    def close(self) -> None:
        """Nothing to release: each request's worker ends with its response."""


class TgiEngine(_RemoteEngine):
    """TGI picks an adapter per request with `parameters.adapter_id` (chat: `model`); adapters load only at
    start (`LORA_ADAPTERS`), so loading one is a rollout of the TGI Deployment."""

    kind = "tgi"

    def __init__(self, settings: Settings):
        super().__init__(settings)
        from huggingface_hub import InferenceClient

        _allow_self_hosted(self.url)
        self._client = InferenceClient(base_url=self.url, timeout=600)

    def submit(self, request: GenerationRequest) -> GenerationStream:
        if request.params.presence_penalty:
            # /generate has no such field, and the Messages API turns it into repetition_penalty =
            # presence_penalty + 2 (a multiplier on prompt and reply tokens): not OpenAI's presence penalty.
            raise InvalidArgument(
                "presence_penalty is not available with the tgi engine (TGI has no OpenAI presence penalty): "
                "send frequency_penalty instead, or serve with inference.engine=openai (vLLM)"
            )
        return super().submit(request)

    def _pieces(self, request: GenerationRequest) -> Iterator[Piece]:
        params = request.params
        chat = request.messages is not None
        sampling = {
            "max_tokens" if chat else "max_new_tokens": params.max_tokens,
            # TGI refuses temperature 0 on /generate (greedy is do_sample=false there), while its Messages API
            # samples at 1.0 when temperature is unset and decodes greedily only when it is 0.
            "temperature": params.temperature if not params.greedy else (0.0 if chat else None),
            "top_p": params.top_p if params.top_p < 1.0 else None,
            "stop": list(params.stop) or None,
            "seed": params.seed,
            # TGI takes it on both routes (it scales it by the sequence length, prompt included).
            "frequency_penalty": params.frequency_penalty or None,
        }
        structured = params.response_format if params.response_format and params.response_format.structured else None
        if structured is not None and structured.type == "json_object":
            # TGI only constrains to a schema with top-level properties: it has no "any JSON object" mode.
            raise InvalidArgument(
                "response_format.type json_object is not available with the tgi engine (TGI needs a JSON Schema "
                "with properties): send json_schema"
            )
        # TGI's grammar form, on /generate and its Messages API alike.
        grammar = schema_format("tgi", "", schema_of(structured)) if structured is not None else None
        if request.messages is not None:
            if grammar is not None:
                sampling["response_format"] = grammar
            # TGI's Messages API takes the adapter id in `model`; "tgi" means the base model.
            chunks = self._client.chat_completion(
                request.messages, model=request.adapter or "tgi", stream=True, **sampling
            )
            yield from _cut_at_stops(
                _openai_style_chunks(chunks, lambda chunk: chunk.choices[0].delta.content if chunk.choices else None),
                params.stop,
            )
            return
        yield from _cut_at_stops(self._generated(request, sampling, grammar), params.stop)

    def _generated(self, request: GenerationRequest, sampling: dict[str, Any], grammar: dict[str, Any] | None) -> Iterator[Piece]:
        params = request.params
        for output in self._client.text_generation(
            request.prompt or "",
            adapter_id=request.adapter or None,
            stream=True,
            details=True,
            do_sample=not params.greedy,
            grammar=grammar,
            **sampling,
        ):
            if output.token is not None and not output.token.special:
                yield TokenEvent(text=output.token.text, token_id=output.token.id)
            if output.details is not None:
                reason: FinishReason = "length" if output.details.finish_reason == "length" else "stop"
                prompt_tokens = getattr(output.details, "input_length", None) or 0
                yield (prompt_tokens, output.details.generated_tokens, reason)

    def probe(self) -> None:
        import httpx

        try:
            response = httpx.get(f"{self.url}/health", timeout=10)
        except httpx.HTTPError as error:
            raise Unavailable(f"tgi server at {self.url} is unreachable: {error}") from error
        if response.status_code >= 400:
            raise self._translate(_HttpError(response.status_code, response.text))

    def load_adapter(self, name: str, path: Path) -> None:
        raise FailedPrecondition(
            f"TGI loads adapters only at start (LORA_ADAPTERS): run `tutorforge adapters deploy {name}` to add "
            f"{name} to the TGI Deployment's adapter list and roll its pods"
        )

    def unload_adapter(self, name: str) -> None:
        raise FailedPrecondition(
            "TGI serves the adapters it was started with (LORA_ADAPTERS); remove it from the Deployment's list "
            "and roll the pods to unload it"
        )

    def loaded_adapters(self) -> list[str]:
        return []


_self_hosted: set[tuple[str, int | None]] = set()
_self_hosted_lock = threading.Lock()


def _allow_self_hosted(url: str) -> None:
    """Let huggingface_hub reach our own TGI server while hub offline mode stays on for everything else.

    Offline mode (HF_HUB_OFFLINE, set so that nothing downloads weights) blocks every request of
    huggingface_hub's shared HTTP client, including those to a self-hosted TGI."""
    import httpx
    from huggingface_hub.utils import _http

    parsed = httpx.URL(url)
    with _self_hosted_lock:
        first = not _self_hosted
        _self_hosted.add((parsed.host, parsed.port))
        if not first:
            return

        def on_request(request: httpx.Request) -> None:
            if (request.url.host, request.url.port) in _self_hosted:
                return
            _http.hf_request_event_hook(request)

        _http.set_client_factory(
            lambda: httpx.Client(event_hooks={"request": [on_request]}, follow_redirects=True, timeout=None)
        )


class OpenAIEngine(_RemoteEngine):
    """vLLM / SGLang: the adapter is the request's `model`; adapters load and unload at run time through
    `/v1/load_lora_adapter` and `/v1/unload_lora_adapter` (vLLM with VLLM_ALLOW_RUNTIME_LORA_UPDATING)."""

    kind = "openai"
    # /v1/models lists the adapters the server has loaded, so a request for another one can fall back.
    reports_loaded_adapters = True
    reports_logprobs = True

    def __init__(self, settings: Settings):
        super().__init__(settings)
        import httpx
        import openai

        token = settings.server.api_token.get_secret_value() if settings.server.api_token else "EMPTY"
        self._client = openai.OpenAI(base_url=f"{self.url}/v1", api_key=token, max_retries=0, timeout=600)
        self._http = httpx.Client(base_url=self.url, timeout=120, headers={"Authorization": f"Bearer {token}"})
        self._served_base = ""

    def _model(self, adapter: str) -> str:
        if adapter != NO_ADAPTER:
            return adapter
        if not self._served_base:
            models = self._client.models.list().data
            roots = [m.id for m in models if not (m.model_extra or {}).get("parent")]
            self._served_base = roots[0] if roots else self.base_model
        return self._served_base

    def _pieces(self, request: GenerationRequest) -> Iterator[Piece]:
        params = request.params
        sampling: dict[str, Any] = {
            "model": self._model(request.adapter),
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if params.stop:
            sampling["stop"] = list(params.stop)
        if params.seed is not None:
            sampling["seed"] = params.seed
        for name in ("frequency_penalty", "presence_penalty"):
            if getattr(params, name):
                sampling[name] = getattr(params, name)
        if params.response_format is not None and params.response_format.structured:
            response_format = openai_response_format(params.response_format)
            if request.messages is not None:
                sampling["response_format"] = response_format
            else:
                # The client's completions API has no such parameter; vLLM and SGLang read it from the body.
                sampling["extra_body"] = {"response_format": response_format}
        if request.messages is not None:
            if params.logprobs is not None:
                sampling.update(logprobs=True, top_logprobs=params.logprobs)
            chunks = self._client.chat.completions.create(messages=request.messages, **sampling)
            yield from _openai_style_chunks(
                chunks, lambda chunk: chunk.choices[0].delta.content if chunk.choices else None, _chat_logprobs
            )
        else:
            if params.logprobs is not None:
                sampling["logprobs"] = params.logprobs
            chunks = self._client.completions.create(prompt=request.prompt or "", **sampling)
            yield from _openai_style_chunks(
                chunks, lambda chunk: chunk.choices[0].text if chunk.choices else None, _completion_logprobs
            )

    def probe(self) -> None:
        try:
            self._model(NO_ADAPTER)
        except Exception as error:  # noqa: BLE001 - every failure reaches the caller as a status
            raise self._translate(error) from error

    def load_adapter(self, name: str, path: Path) -> None:
        self._post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(path)})

    def unload_adapter(self, name: str) -> None:
        self._post("/v1/unload_lora_adapter", {"lora_name": name})

    def loaded_adapters(self) -> list[str]:
        try:
            models = self._client.models.list().data
        except Exception as error:  # noqa: BLE001
            raise self._translate(error) from error
        return sorted(m.id for m in models if (m.model_extra or {}).get("parent"))

    def _post(self, path: str, body: dict[str, str]) -> None:
        import httpx

        try:
            response = self._http.post(path, json=body)
        except httpx.HTTPError as error:
            raise Unavailable(f"openai server at {self.url} is unreachable: {error}") from error
        if response.status_code == 404 and "lora" in path and "not found" not in response.text.lower():
            raise FailedPrecondition(
                f"{self.url} has no {path}: start vLLM with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"
            )
        if response.status_code >= 400:
            error = _HttpError(response.status_code, response.text)
            raise self._translate(error)

    def close(self) -> None:
        self._http.close()
        self._client.close()


def _reason_of(error: Exception) -> str:
    """The server's own reason (TGI and vLLM name the field at fault), which huggingface_hub's errors leave
    out: it streams, so its httpx error holds a response whose body was not read yet."""
    import httpx

    if not isinstance(error, httpx.HTTPStatusError):
        return ""
    try:
        text = error.response.read().decode(errors="replace").strip()
    except (httpx.HTTPError, httpx.StreamError):
        return ""
    return f" ({text[:300]})" if text else ""


class _HttpError(Exception):
    def __init__(self, status_code: int, text: str):
        super().__init__(f"HTTP {status_code}: {text[:300]}")
        self.status_code = status_code


def _cut_at_stops(pieces: Iterator[Piece], stops: tuple[str, ...]) -> Iterator[Piece]:
    """TGI keeps the stop sequence that ended a reply in its text; tutorforge's replies (like OpenAI's) end
    before it, so the tail that may still become a stop sequence is held back and the sequence cut off."""
    if not stops:
        yield from pieces
        return
    matcher = StopMatcher(stops)
    for piece in pieces:
        if not isinstance(piece, TokenEvent):
            tail = "" if matcher.stopped else matcher.flush()
            if tail:
                yield TokenEvent(text=tail, token_id=0)
            yield piece
        elif not matcher.stopped:
            text = matcher.feed(piece.text)
            if text:
                yield TokenEvent(text=text, token_id=piece.token_id)


def _chat_logprobs(chunk: Any) -> tuple[TokenLogprob, ...]:
    """Chat chunks: choices[0].logprobs.content = [{token, logprob, top_logprobs: [{token, logprob}]}]."""
    logprobs = chunk.choices[0].logprobs if chunk.choices else None
    return tuple(
        TokenLogprob(item.token, item.logprob, tuple((top.token, top.logprob) for top in item.top_logprobs or ()))
        for item in (getattr(logprobs, "content", None) or ())
    )


def _completion_logprobs(chunk: Any) -> tuple[TokenLogprob, ...]:
    """Completion chunks: choices[0].logprobs = {tokens, token_logprobs, top_logprobs: [{token: logprob}]}."""
    logprobs = chunk.choices[0].logprobs if chunk.choices else None
    if logprobs is None or not logprobs.tokens:
        return ()
    tops = logprobs.top_logprobs or [{}] * len(logprobs.tokens)
    return tuple(
        TokenLogprob(token, logprob, tuple((other, value) for other, value in (top or {}).items()))
        for token, logprob, top in zip(logprobs.tokens, logprobs.token_logprobs, tops, strict=False)
    )


def _openai_style_chunks(
    chunks: Any,
    text_of: Callable[[Any], str | None],
    logprobs_of: Callable[[Any], tuple[TokenLogprob, ...]] | None = None,
) -> Iterator[Piece]:
    """Token pieces from OpenAI-style stream chunks, then the usage and finish reason."""
    reason: FinishReason = "stop"
    prompt_tokens = completion_tokens = 0
    for chunk in chunks:
        text = text_of(chunk)
        logprobs = logprobs_of(chunk) if logprobs_of is not None else ()
        if text or logprobs:
            yield TokenEvent(text=text or "", token_id=0, logprobs=logprobs)
        if chunk.choices and chunk.choices[0].finish_reason:
            reason = "length" if chunk.choices[0].finish_reason == "length" else "stop"
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            prompt_tokens, completion_tokens = usage.prompt_tokens, usage.completion_tokens
    yield (prompt_tokens, completion_tokens, reason)
