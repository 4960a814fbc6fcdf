"""The OpenAI-compatible HTTP door for chatbot frontends: `/v1/models` and `/v1/chat/completions` (with
SSE streaming), backed by the same `InferenceService` as gRPC. `model` is the base model's name or an
adapter's; the tutor's citations travel in the extra field `citations`.

`response_format` ({"type": "json_object"} or {"type": "json_schema", "json_schema": {"name", "schema",
"strict"}}) holds the reply to JSON; the embedded engine enforces it token by token.

Extra request fields (the openai client sends them with `extra_body`): `retrieval` (true/false, or
{"limit", "score_threshold"}; unset = on for text replies, this is the tutor, and off for JSON replies,
whose document the tutor's passages and notices do not belong in), `fallback_to_base`, `program`."""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

from pydantic import BaseModel, ConfigDict

from tutorforge.core.errors import FailedPrecondition, InvalidArgument, TutorforgeError, status_of
from tutorforge.inference.chat import RetrievalOptions
from tutorforge.inference.service import ChatTurn, InferenceService
from tutorforge.inference.structured import parse_response_format
from tutorforge.inference.types import ResponseFormat, TokenEvent

log = logging.getLogger(__name__)

# gRPC status name → HTTP status, as the OpenAI API uses them.
_HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "UNAUTHENTICATED": 401,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "UNAVAILABLE": 503,
}


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str
    # A string, or a list of content parts of which the text parts are used.
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The OpenAI Chat Completions body, plus tutorforge's extra fields."""

    model_config = ConfigDict(extra="ignore")
    model: str = ""
    messages: list[Message]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    response_format: dict[str, Any] | None = None
    retrieval: bool | dict[str, Any] | None = None
    fallback_to_base: bool = False
    program: str = ""


def create_app(service: InferenceService, api_token: str | None = None) -> Any:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse

    app = FastAPI(title="tutorforge inference (OpenAI-compatible)")
    expected = f"Bearer {api_token}".encode() if api_token else None

    @app.middleware("http")
    async def authenticate(request: Request, call_next: Any) -> Any:
        given = request.headers.get("authorization", "").encode()
        if expected is not None and not hmac.compare_digest(given, expected):
            return _error(JSONResponse, 401, "missing or wrong 'Authorization: Bearer <token>' header", "UNAUTHENTICATED")
        return await call_next(request)

    @app.exception_handler(TutorforgeError)
    async def domain_error(_request: Request, error: TutorforgeError) -> Any:
        code, message = status_of(error)
        return _error(JSONResponse, _HTTP_STATUS.get(code.name, 500), message, code.name)

    @app.get("/v1/models")
    def list_models() -> dict[str, Any]:
        created = int(time.time())
        models = [{"id": service.base_model, "object": "model", "created": created, "owned_by": "tutorforge"}]
        for adapter in service.list_adapters():
            if adapter.base_model == service.base_model:
                models.append(
                    {
                        "id": adapter.name,
                        "object": "model",
                        "created": int(adapter.created_at) or created,
                        "owned_by": "tutorforge",
                        "parent": service.base_model,
                        "metadata": adapter.metadata,
                    }
                )
        return {"object": "list", "data": models}

    @app.post("/v1/chat/completions")
    def chat_completions(body: ChatCompletionRequest) -> Any:
        if body.n != 1:
            raise FailedPrecondition("only n=1 is supported")
        response_format = _response_format(body.response_format)
        structured = response_format is not None
        retrieval = _retrieval_options(not structured if body.retrieval is None else body.retrieval)
        stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        params = service.sampling(
            max_tokens=body.max_completion_tokens or body.max_tokens or 0,
            temperature=body.temperature,
            top_p=body.top_p,
            stop=stops,
            seed=body.seed,
        )
        params = replace(params, response_format=response_format)
        adapter = "" if body.model in ("", "base", service.base_model) else body.model
        turn = service.chat(
            [{"role": m.role, "content": _text_of(m.content)} for m in body.messages],
            params,
            adapter=adapter,
            fallback_to_base=body.fallback_to_base,
            retrieval=retrieval,
            program=body.program,
        )
        reply = _Reply(id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()), model=body.model or service.base_model)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(_sse(reply, turn, include_usage), media_type="text/event-stream")
        text, summary = turn.stream.collect()
        return {
            **reply.header("chat.completion"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": turn.preamble + text},
                    "finish_reason": _finish(summary.finish_reason),
                }
            ],
            "usage": _usage(summary),
            "citations": [asdict(c) for c in turn.citations],
            "tutorforge": {"adapter": summary.adapter, "fell_back_to_base": summary.fell_back_to_base},
        }

    return app


@dataclass
class _Reply:
    id: str
    created: int
    model: str

    def header(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}


def _sse(reply: _Reply, turn: ChatTurn, include_usage: bool) -> Iterator[str]:
    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        body = {
            **reply.header("chat.completion.chunk"),
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    try:
        yield chunk({"role": "assistant", "content": turn.preamble}, citations=[asdict(c) for c in turn.citations])
        for event in turn.stream:
            if isinstance(event, TokenEvent):
                if event.text:
                    yield chunk({"content": event.text})
                continue
            extra = {"tutorforge": {"adapter": event.adapter, "fell_back_to_base": event.fell_back_to_base}}
            yield chunk({}, _finish(event.finish_reason), **extra)
            if include_usage:
                usage = {**reply.header("chat.completion.chunk"), "choices": [], "usage": _usage(event)}
                yield f"data: {json.dumps(usage)}\n\n"
        yield "data: [DONE]\n\n"
    except TutorforgeError as error:
        code, message = status_of(error)
        yield f"data: {json.dumps({'error': {'message': message, 'type': code.name.lower(), 'code': code.name}})}\n\n"
    finally:
        # The client went away (or the reply ended): free the generation slot.
        turn.stream.cancel()


def _response_format(value: dict[str, Any] | None) -> ResponseFormat | None:
    if not value:
        return None
    kind = str(value.get("type", "text"))
    if kind != "json_schema":
        return parse_response_format(kind)
    spec = value.get("json_schema")
    if not isinstance(spec, dict):
        raise InvalidArgument('response_format.json_schema is missing: send {"name": ..., "schema": {...}}')
    return parse_response_format(kind, spec.get("schema"), str(spec.get("name", "")))


def _retrieval_options(value: bool | dict[str, Any]) -> RetrievalOptions:
    if isinstance(value, bool):
        return RetrievalOptions(enabled=value)
    threshold = value.get("score_threshold")
    return RetrievalOptions(
        enabled=bool(value.get("enabled", True)),
        limit=int(value.get("limit", 0)),
        score_threshold=float(threshold) if threshold is not None else None,
    )


def _text_of(content: str | list[dict[str, Any]] | None) -> str:
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if part.get("type") == "text")
    return content or ""


def _finish(reason: str) -> str:
    return "length" if reason == "length" else "stop"


def _usage(summary: Any) -> dict[str, int]:
    return {
        "prompt_tokens": summary.prompt_tokens,
        "completion_tokens": summary.completion_tokens,
        "total_tokens": summary.total_tokens,
    }


def _error(response_class: Any, status: int, message: str, code: str) -> Any:
    return response_class(status_code=status, content={"error": {"message": message, "type": code.lower(), "code": code}})


class HttpServer:
    """uvicorn in a background thread, stopped by the runtime's shutdown hooks."""

    def __init__(self, server: Any, thread: threading.Thread):
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return self._server.servers[0].sockets[0].getsockname()[1]

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def start_http_server(service: InferenceService, host: str, port: int, api_token: str | None = None) -> HttpServer:
    import uvicorn

    config = uvicorn.Config(create_app(service, api_token), host=host, port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="inference-http", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise FailedPrecondition(f"cannot serve the OpenAI-compatible API on {host}:{port}; is the port taken?")
        time.sleep(0.05)
    log.info("OpenAI-compatible API on http://%s:%d/v1", host, port)
    return HttpServer(server, thread)
