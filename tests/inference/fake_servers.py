"""Small stand-ins for a TGI server and a vLLM OpenAI-compatible server (neither can run here). They
speak the documented request/response bodies, stream SSE like the real servers, and record what they
received, so tests can check what the real client libraries sent. The TGI stand-in validates sampling
parameters as TGI's router does (router/src/validation.rs: the same checks, limits and 422 messages) and
honours them: greedy replies are fixed, sampled ones depend on the seed and the temperature, a penalty
against repeats (frequency_penalty > 0, repetition_penalty > 1) swaps the words the prompt or the reply
already holds, and a stop sequence ends the reply (included in it, as TGI includes it). Structured-output requests (TGI
`grammar`/`response_format`, OpenAI `response_format`) are checked as strictly as the real servers check
them (TGI's router: router/src/lib.rs GrammarType, validation.rs; vLLM: entrypoints/openai/protocol.py),
and answered with a document valid against the schema, as a server that enforces it would."""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

BASE_MODEL = "SmolLM2-135M-Instruct"


@dataclass
class Recorder:
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def last(self, path: str) -> dict[str, Any]:
        return [body for seen, body in self.requests if seen == path][-1]


def _reply_words(who: str, limit: int, schema: dict[str, Any] | None = None) -> list[str]:
    """The reply, one word a token, cut at `limit`: a sentence, or with a `schema` a JSON document valid
    against it whose string fields hold that sentence."""
    sentence = f"Hello from {who}, what do you already know about it?"
    text = sentence if schema is None else json.dumps(_document(schema, sentence))
    words = text.split(" ")
    return [word if index == 0 else f" {word}" for index, word in enumerate(words)][:limit]


def _document(schema: dict[str, Any], sentence: str) -> dict[str, Any]:
    # Enough for the schemas tutorforge sends (objects of strings); any other schema is beyond this stand-in.
    properties = schema.get("properties") or {"text": {"type": "string"}}
    document = {key: sentence for key in schema.get("required", properties)}
    jsonschema.validate(document, schema)
    return document


class Refused(Exception):
    """A request the real server refuses: its status and body."""

    def __init__(self, status: int, content: dict[str, Any] | str):
        super().__init__(str(content))
        self.status = status
        self.content = content

    def response(self) -> JSONResponse | PlainTextResponse:
        if isinstance(self.content, str):
            return PlainTextResponse(self.content, status_code=self.status)
        return JSONResponse(status_code=self.status, content=self.content)


# TGI's launcher defaults (--max-stop-sequences, --max-top-n-tokens); max_total_tokens is per stand-in.
TGI_MAX_STOP_SEQUENCES = 4
TGI_MAX_TOP_N_TOKENS = 5
# TGI's DEFAULT_GENERATION_LENGTH (max_new_tokens unset) and its Messages API default for max_tokens.
TGI_DEFAULT_NEW_TOKENS = 1024
TGI_CHAT_DEFAULT_MAX_TOKENS = 100
# Words a sampled reply draws from (the stand-in's "vocabulary").
_SAMPLED_WORDS = ("maybe", "think", "about", "the", "rock", "why", "heat", "slowly", "water", "look", "again", "first")


def _tgi_invalid(problem: str) -> Refused:
    return Refused(422, {"error": f"Input validation error: {problem}", "error_type": "validation"})


def _tgi_validate(inputs: str, parameters: dict[str, Any], max_total_tokens: int) -> tuple[bool, int]:
    """TGI's Validation::validate for the fields tutorforge sends: (sampling?, max_new_tokens), or its 422.
    The stand-in counts whitespace-separated words as tokens."""
    sampling = bool(parameters.get("do_sample")) or any(
        parameters.get(key) is not None for key in ("temperature", "top_k", "top_p", "typical_p")
    )
    if (parameters.get("best_of") or 1) > 1 and not sampling:
        raise _tgi_invalid("you must use sampling when `best_of` is > 1")
    temperature = parameters.get("temperature")
    if temperature is not None and temperature <= 0.0:
        raise _tgi_invalid("`temperature` must be strictly positive")
    repetition_penalty = parameters.get("repetition_penalty")
    if repetition_penalty is not None and repetition_penalty <= 0.0:
        raise _tgi_invalid("`repetition_penalty` must be strictly positive")
    if not -2.0 <= (parameters.get("frequency_penalty") or 0.0) <= 2.0:
        raise _tgi_invalid("`frequency_penalty` must be >= -2.0 and <= 2.0")
    for key in ("top_p", "typical_p"):
        value = parameters.get(key)
        if value is not None and not 0.0 < value < 1.0:
            raise _tgi_invalid(f"`{key}` must be > 0.0 and < 1.0")
    if parameters.get("top_k") is not None and parameters["top_k"] <= 0:
        raise _tgi_invalid("`top_k` must be strictly positive")
    if parameters.get("max_new_tokens") == 0:
        raise _tgi_invalid("`max_new_tokens` must be strictly positive")
    stops = parameters.get("stop") or []
    if len(stops) > TGI_MAX_STOP_SEQUENCES:
        raise _tgi_invalid(f"`stop` supports up to {TGI_MAX_STOP_SEQUENCES} stop sequences. Given: {len(stops)}")
    top_n = parameters.get("top_n_tokens")
    if top_n is not None and top_n > TGI_MAX_TOP_N_TOKENS:
        raise _tgi_invalid(f"`top_n_tokens` must be >= 0 and <= {TGI_MAX_TOP_N_TOKENS}. Given: {top_n}")
    if not inputs:
        raise _tgi_invalid("`inputs` cannot be empty")
    input_length = len(inputs.split())
    max_new_tokens = parameters.get("max_new_tokens")
    if max_new_tokens is None:
        max_new_tokens = min(max_total_tokens - input_length, TGI_DEFAULT_NEW_TOKENS)
    if input_length + max_new_tokens > max_total_tokens:
        raise _tgi_invalid(
            f"`inputs` tokens + `max_new_tokens` must be <= {max_total_tokens}. "
            f"Given: {input_length} `inputs` tokens and {max_new_tokens} `max_new_tokens`"
        )
    return sampling, max_new_tokens


def _tgi_words(
    who: str, limit: int, schema: dict[str, Any] | None, parameters: dict[str, Any], sampling: bool, inputs: str
) -> tuple[list[str], str]:
    """The reply's words and TGI's finish reason (length, eos_token, stop_sequence). Greedy: the fixed reply.
    Sampling: each word is swapped for a random one with a probability that grows with the temperature,
    drawn from the seed (TGI picks a random seed when none is given). A penalty against repeats: each word
    that `inputs` or the reply so far already holds is swapped for one neither holds (TGI's penalties count
    prompt and reply tokens alike); a penalty that favours repeats leaves the reply, which has none, as is."""
    words = _reply_words(who, 10_000, schema)
    if sampling and schema is None:
        rng = random.Random(parameters.get("seed") if parameters.get("seed") is not None else random.random())
        swap = 1.0 - 1.0 / (1.0 + (parameters.get("temperature") or 1.0))
        words = [f" {rng.choice(_SAMPLED_WORDS)}" if index and rng.random() < swap else word for index, word in enumerate(words)]
    if schema is None and ((parameters.get("frequency_penalty") or 0.0) > 0.0 or (parameters.get("repetition_penalty") or 1.0) > 1.0):
        seen = set(inputs.split())
        for index, word in enumerate(words):
            fresh = [other for other in _SAMPLED_WORDS if other not in seen]
            if word.strip() in seen and fresh:
                words[index] = f" {fresh[0]}" if index else fresh[0]
            seen.add(words[index].strip())
    reason = "eos_token"
    if len(words) > limit:
        words, reason = words[:limit], "length"
    stops = [stop for stop in parameters.get("stop") or [] if stop]
    text = ""
    for index, word in enumerate(words):
        text += word
        if any(stop in text for stop in stops):
            # TGI stops on the token that completes a stop sequence and keeps that token in the reply.
            return words[: index + 1], "stop_sequence"
    return words, reason


def _tgi_schema(grammar: Any, where: str) -> dict[str, Any] | None:
    """The JSON Schema a TGI `GrammarType` asks for (None: no grammar), refused as TGI's router refuses it:
    the body must deserialize ({"type": json|json_object|json_schema|regex, "value": ...}, axum's plain-text
    422), and the schema must be a valid JSON Schema with top-level `properties` (validation 422)."""
    if grammar is None:
        return None

    def malformed(problem: str) -> Refused:
        return Refused(422, f"Failed to deserialize the JSON body into the target type: {where}: {problem}")

    def invalid(problem: str) -> Refused:
        return Refused(422, {"error": f"Input validation error: grammar is not valid: {problem}", "error_type": "validation"})

    if not isinstance(grammar, dict) or "type" not in grammar:
        raise malformed("missing field `type`")
    kind = grammar["type"]
    if kind not in ("json", "json_object", "json_schema", "regex"):
        raise malformed(f"unknown variant `{kind}`, expected one of `json`, `json_object`, `regex`, `json_schema`")
    if "value" not in grammar:
        raise malformed("missing field `value`")
    value = grammar["value"]
    if kind == "regex":
        if not isinstance(value, str):
            raise malformed("invalid type: expected a string")
        raise NotImplementedError("the TGI stand-in answers JSON grammars only")
    if kind == "json_schema":
        if not isinstance(value, dict) or "schema" not in value:
            raise malformed("missing field `schema`")
        if not isinstance(value.get("name", ""), str | None):
            raise malformed("name: invalid type: expected a string")
        schema = value["schema"]
    elif isinstance(value, str):
        try:
            schema = json.loads(value)
        except json.JSONDecodeError as error:
            raise invalid(str(error)) from error
    elif isinstance(value, dict):
        schema = value
    else:
        raise Refused(422, {"error": "Input validation error: grammar is not supported", "error_type": "validation"})
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as error:
        raise invalid(error.message) from error
    if not isinstance(schema, dict) or "properties" not in schema:
        raise invalid("Grammar must have a 'properties' field")
    return schema


def _openai_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON Schema of an OpenAI `response_format` as vLLM reads it (None: free text); a shape its
    pydantic model refuses gets vLLM's 400."""
    response_format = body.get("response_format")

    def refused(problem: str) -> Refused:
        message = f"1 validation error for {'ChatCompletionRequest' if 'messages' in body else 'CompletionRequest'}\nresponse_format: {problem}"
        return Refused(400, {"object": "error", "message": message, "type": "BadRequestError", "param": None, "code": 400})

    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        raise refused("Input should be a valid dictionary")
    kind = response_format.get("type")
    if kind not in ("text", "json_object", "json_schema"):
        raise refused(f"Input should be 'text', 'json_object' or 'json_schema' (got {kind!r})")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise refused("json_schema.name: Field required")
    if spec.get("schema") is None:
        return None  # vLLM then decodes without a constraint
    if not isinstance(spec["schema"], dict):
        raise refused("json_schema.schema: Input should be a valid dictionary")
    if not isinstance(spec.get("strict", False), bool | None):
        raise refused("json_schema.strict: Input should be a valid boolean")
    try:
        jsonschema.Draft202012Validator.check_schema(spec["schema"])
    except jsonschema.SchemaError as error:
        raise refused(f"json_schema.schema: {error.message}") from error
    return spec["schema"]


def _sse(events: Iterator[dict[str, Any] | str], prefix: str = "data: ") -> StreamingResponse:
    """Server-sent events; TGI's native routes write `data:` without the space, OpenAI-style routes with it."""

    def lines() -> Iterator[str]:
        for event in events:
            yield f"{prefix}{event if isinstance(event, str) else json.dumps(event)}\n\n"

    return StreamingResponse(lines(), media_type="text/event-stream")


def tgi_app(recorder: Recorder, adapters: set[str], max_total_tokens: int = 4096) -> FastAPI:
    """TGI's `/generate`, `/generate_stream` (and `/`, which dispatches on `stream`) and Messages API, for a
    TGI started with `--max-total-tokens max_total_tokens`."""
    app = FastAPI()

    def check_adapter(adapter: str | None) -> JSONResponse | None:
        if adapter and adapter not in adapters:
            return JSONResponse(status_code=404, content={"error": f"adapter {adapter} not found", "error_type": "not_found"})
        return None

    def generate(body: dict[str, Any]) -> Any:
        parameters = body.get("parameters") or {}
        try:
            schema = _tgi_schema(parameters.get("grammar"), "parameters.grammar")
        except Refused as refused:
            return refused.response()
        if refused := check_adapter(parameters.get("adapter_id")):
            return refused
        try:
            sampling, limit = _tgi_validate(body.get("inputs") or "", parameters, max_total_tokens)
        except Refused as refused:
            return refused.response()
        words, reason = _tgi_words(parameters.get("adapter_id") or "base", limit, schema, parameters, sampling, body["inputs"])
        details = {"finish_reason": reason, "generated_tokens": len(words), "seed": parameters.get("seed"),
                   "input_length": len(body["inputs"].split())}
        if not body.get("stream"):
            tokens = [{"id": 100 + i, "text": w, "logprob": -0.5, "special": False} for i, w in enumerate(words)]
            return {"generated_text": "".join(words), "details": {**details, "prefill": [], "tokens": tokens}}

        def events() -> Iterator[dict[str, Any]]:
            for index, word in enumerate(words):
                last = index == len(words) - 1
                yield {
                    "index": index + 1,
                    "token": {"id": 100 + index, "text": word, "logprob": -0.5, "special": False},
                    "top_tokens": None,
                    "generated_text": "".join(words) if last else None,
                    "details": details if last else None,
                }

        return _sse(events(), prefix="data:")

    @app.get("/health")
    def health() -> PlainTextResponse:
        # TGI answers 200 with an empty body while its shards are healthy (503 otherwise).
        return PlainTextResponse("")

    @app.post("/")
    async def compat(request: Request) -> Any:
        body = await request.json()
        recorder.requests.append(("/", body))
        return generate(body)

    @app.post("/generate")
    async def generate_route(request: Request) -> Any:
        body = await request.json()
        recorder.requests.append(("/generate", body))
        return generate({**body, "stream": False})

    @app.post("/generate_stream")
    async def generate_stream(request: Request) -> Any:
        body = await request.json()
        recorder.requests.append(("/generate_stream", body))
        return generate({**body, "stream": True})

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        recorder.requests.append(("/v1/chat/completions", body))
        adapter = None if body.get("model") == "tgi" else body.get("model")
        try:
            schema = _tgi_schema(body.get("response_format"), "response_format")
        except Refused as refused:
            return refused.response()
        if refused := check_adapter(adapter):
            return refused
        # TGI's ChatRequest -> GenerateParameters: temperature 0 means greedy; unset means sampling at 1.0.
        temperature = body.get("temperature")
        parameters = {
            "do_sample": temperature != 0.0,
            "temperature": None if temperature == 0.0 else temperature,
            "top_p": body.get("top_p"),
            "seed": body.get("seed"),
            "stop": body.get("stop") or [],
            "max_new_tokens": body.get("max_tokens") if body.get("max_tokens") is not None else TGI_CHAT_DEFAULT_MAX_TOKENS,
            "frequency_penalty": body.get("frequency_penalty"),
            # TGI's Messages API has no presence penalty of its own: it becomes a repetition penalty.
            "repetition_penalty": None if body.get("presence_penalty") is None else body["presence_penalty"] + 2.0,
        }
        prompt = " ".join(str(m.get("content") or "") for m in body.get("messages") or [])
        try:
            sampling, limit = _tgi_validate(prompt, parameters, max_total_tokens)
        except Refused as refused:
            return refused.response()
        words, reason = _tgi_words(adapter or "base", limit, schema, parameters, sampling, prompt)
        return _chat_response(body, adapter or "base", "tgi", schema, (words, "length" if reason == "length" else "stop"))

    return app


def vllm_app(recorder: Recorder) -> FastAPI:
    """vLLM's OpenAI-compatible server with runtime LoRA updating enabled."""
    app = FastAPI()
    loaded: dict[str, str] = {}

    def error(status: int, message: str, kind: str) -> JSONResponse:
        return JSONResponse(status_code=status, content={"object": "error", "message": message, "type": kind, "param": None, "code": status})

    def model_of(body: dict[str, Any]) -> tuple[str | None, JSONResponse | None]:
        model = body.get("model")
        if model == BASE_MODEL:
            return "base", None
        if model in loaded:
            return model, None
        return None, error(404, f"The model `{model}` does not exist.", "NotFoundError")

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        data = [{"id": BASE_MODEL, "object": "model", "created": 0, "owned_by": "vllm", "root": "/models/base", "parent": None}]
        data += [
            {"id": name, "object": "model", "created": 0, "owned_by": "vllm", "root": path, "parent": BASE_MODEL}
            for name, path in loaded.items()
        ]
        return {"object": "list", "data": data}

    @app.post("/v1/load_lora_adapter")
    async def load(request: Request) -> Any:
        body = await request.json()
        recorder.requests.append(("/v1/load_lora_adapter", body))
        if body["lora_name"] in loaded:
            return error(400, f"The lora adapter '{body['lora_name']}' has already been loaded.", "InvalidUserInput")
        loaded[body["lora_name"]] = body["lora_path"]
        return PlainTextResponse(f"Success: LoRA adapter '{body['lora_name']}' added successfully.")

    @app.post("/v1/unload_lora_adapter")
    async def unload(request: Request) -> Any:
        body = await request.json()
        recorder.requests.append(("/v1/unload_lora_adapter", body))
        if loaded.pop(body["lora_name"], None) is None:
            return error(404, f"The lora adapter '{body['lora_name']}' cannot be found.", "NotFoundError")
        return PlainTextResponse(f"Success: LoRA adapter '{body['lora_name']}' removed successfully.")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        body = await request.json()
        recorder.requests.append(("/v1/completions", body))
        try:
            schema = _openai_schema(body)
        except Refused as refused:
            return refused.response()
        who, refused = model_of(body)
        if refused:
            return refused
        words = _reply_words(who, body.get("max_tokens") or 16, schema)
        reason = "length" if len(words) == body.get("max_tokens") else "stop"
        header = {"id": "cmpl-1", "object": "text_completion", "created": int(time.time()), "model": body["model"]}
        if not body.get("stream"):
            usage = {"prompt_tokens": 7, "completion_tokens": len(words), "total_tokens": 7 + len(words)}
            return {**header, "choices": [{"index": 0, "text": "".join(words), "finish_reason": reason, "logprobs": None}], "usage": usage}

        def events() -> Iterator[dict[str, Any] | str]:
            for index, word in enumerate(words):
                finish = reason if index == len(words) - 1 else None
                yield {**header, "choices": [{"index": 0, "text": word, "logprobs": None, "finish_reason": finish}], "usage": None}
            if (body.get("stream_options") or {}).get("include_usage"):
                usage = {"prompt_tokens": 7, "completion_tokens": len(words), "total_tokens": 7 + len(words)}
                yield {**header, "choices": [], "usage": usage}
            yield "[DONE]"

        return _sse(events())

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        recorder.requests.append(("/v1/chat/completions", body))
        try:
            schema = _openai_schema(body)
        except Refused as refused:
            return refused.response()
        who, refused = model_of(body)
        if refused:
            return refused
        return _chat_response(body, who, "vllm", schema)

    return app


def _chat_response(
    body: dict[str, Any], who: str, system_fingerprint: str, schema: dict[str, Any] | None,
    reply: tuple[list[str], str] | None = None,
) -> Any:
    """An OpenAI-style chat reply: `reply` (words, finish reason), or the fixed reply cut at max_tokens."""
    if reply is None:
        limit = body.get("max_tokens") or body.get("max_completion_tokens") or 16
        words = _reply_words(who, limit, schema)
        reply = words, "length" if len(words) == limit else "stop"
    words, reason = reply
    header = {"id": "chatcmpl-1", "created": int(time.time()), "model": body.get("model"), "system_fingerprint": system_fingerprint}
    usage = {"prompt_tokens": 9, "completion_tokens": len(words), "total_tokens": 9 + len(words)}
    if not body.get("stream"):
        message = {"role": "assistant", "content": "".join(words)}
        return {**header, "object": "chat.completion", "choices": [{"index": 0, "message": message, "finish_reason": reason}], "usage": usage}

    def events() -> Iterator[dict[str, Any] | str]:
        chunk = {**header, "object": "chat.completion.chunk"}
        for index, word in enumerate(words):
            finish = reason if index == len(words) - 1 else None
            delta = {"role": "assistant", "content": word}
            yield {**chunk, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], "usage": None}
        if (body.get("stream_options") or {}).get("include_usage"):
            yield {**chunk, "choices": [], "usage": usage}
        yield "[DONE]"

    return _sse(events())


class FakeServer:
    """Serves a FastAPI app with uvicorn on a free loopback port in a background thread."""

    def __init__(self, app: FastAPI):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeServer:
        self._thread.start()
        while not self._server.started:
            time.sleep(0.02)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
