"""The OpenAI-compatible HTTP door for chatbot frontends: `/v1/models` and `/v1/chat/completions` (with
SSE streaming), backed by the same `InferenceService` as gRPC. `model` is the base model's name or an
adapter's; the tutor's citations travel in the extra field `citations`.

`response_format` ({"type": "json_object"} or {"type": "json_schema", "json_schema": {"name", "schema",
"strict"}}) holds the reply to JSON; the embedded engine enforces it token by token.

Extra request fields (the openai client sends them with `extra_body`): `retrieval` (true/false, or
{"limit", "score_threshold"}; unset = on for text replies, this is the tutor, and off for JSON replies,
whose document the tutor's passages and notices do not belong in), `fallback_to_base`, `program`."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import grpc
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tutorforge.console.views import Connections
from tutorforge.console.web import is_public, mount_console
from tutorforge.core.access import AccessPolicy, audit
from tutorforge.core.admission import Limit
from tutorforge.core.errors import (
    MAX_STATUS_CHARS,
    FailedPrecondition,
    InvalidArgument,
    TutorforgeError,
    status_of,
)
from tutorforge.core.names import adapter_for
from tutorforge.core.teaching import RetrievalOptions
from tutorforge.core.telemetry.metrics import install_http_metrics
from tutorforge.core.tls import uvicorn_options
from tutorforge.inference.openai_compat import (
    OpenAIFields,
    checked_logprobs,
    start_choices,
    streamed_reply,
    whole_reply,
)
from tutorforge.inference.service import ChatTurn, InferenceService
from tutorforge.inference.structured import parse_response_format
from tutorforge.inference.types import NO_ADAPTER, ResponseFormat

log = logging.getLogger(__name__)

# gRPC status name → HTTP status, as the OpenAI API uses them.
_HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
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


class RetrievalBody(BaseModel):
    """`retrieval` as an object; unknown keys are refused so that a typo is not silently ignored."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    limit: int = Field(0, ge=0)
    score_threshold: float | None = Field(None, allow_inf_nan=False)


class ChatCompletionRequest(OpenAIFields):
    """The OpenAI Chat Completions body, plus tutorforge's extra fields."""

    @field_validator("retrieval", mode="before")
    @classmethod
    def _retrieval_switch(cls, value: Any) -> Any:
        return {"enabled": value} if isinstance(value, bool) else value

    model_config = ConfigDict(extra="ignore")
    model: str = ""
    messages: list[Message]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    # -2..2, checked by InferenceService.sampling (which names the field).
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    stop: str | list[str] | None = None
    # The range of the gRPC field (int64).
    seed: int | None = Field(None, ge=-(2**63), lt=2**63)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    response_format: dict[str, Any] | None = None
    # true/false is shorthand for {"enabled": ...}, so that errors name the object's fields.
    retrieval: RetrievalBody | None = None
    fallback_to_base: bool = False
    program: str = ""


def create_app(
    service: InferenceService, api_token: str | None = None, connection: Connections | None = None, access: AccessPolicy | None = None
) -> Any:
    """`connection` (service name → SDK connection) mounts the web console (tutorforge.console) at `/`. `access`
    (scoped tokens, core/access.py) wins over a bare `api_token`."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    app = FastAPI(title="tutorforge inference (OpenAI-compatible)")
    access = access or AccessPolicy.from_token(api_token)

    @app.middleware("http")
    async def authenticate(request: Request, call_next: Any) -> Any:
        if is_public(request.scope):
            return await call_next(request)
        path = request.url.path
        who, denial, audited = access.check_http(request.method, path, request.headers.get("authorization", ""))
        if denial is not None:
            code, message = denial
            response = _error(JSONResponse, _HTTP_STATUS.get(code.name, 403), message, code.name)
        else:
            response = await call_next(request)
        if audited:
            client = f"{request.client.host}:{request.client.port}" if request.client else ""
            audit(who, f"{request.method} {path}", "-", str(response.status_code), client)
        return response

    # Added after `authenticate`, so it runs outside it: refused requests are counted and traced too.
    install_http_metrics(app)

    server_settings = service.settings.server
    # Requests in flight (a streamed reply holds its slot until it ends); more get 429 + Retry-After.
    in_flight = Limit(server_settings.max_concurrent_http, "HTTP requests", server_settings.retry_after_ms)
    retry_after = str(max(1, -(-server_settings.retry_after_ms // 1000)))

    @app.exception_handler(grpc.RpcError)
    @app.exception_handler(TutorforgeError)
    async def domain_error(_request: Request, error: TutorforgeError) -> Any:
        code, message = status_of(error)
        response = _error(JSONResponse, _HTTP_STATUS.get(code.name, 500), message, code.name)
        if code.name == "RESOURCE_EXHAUSTED":
            response.headers["Retry-After"] = retry_after
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, error: StarletteHTTPException) -> Any:
        # FastAPI's own refusals (a body it cannot parse, an unknown route) in the same error shape.
        code = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND"}.get(error.status_code, f"HTTP_{error.status_code}")
        return _error(JSONResponse, error.status_code, f"body: {error.detail}" if error.status_code == 400 else str(error.detail), code)

    @app.exception_handler(RequestValidationError)
    async def bad_body(_request: Request, error: RequestValidationError) -> Any:
        # OpenAI's error shape with the field path first (e.g. "retrieval.limit: ..."), not FastAPI's 422.
        first = error.errors()[0] if error.errors() else {"loc": (), "msg": "invalid body", "type": ""}
        path = first["loc"][1:] if first["loc"][:1] == ("body",) else first["loc"]
        # A body that is not JSON is located by character offset, which names no field.
        where = "body" if first.get("type") == "json_invalid" else ".".join(map(str, path)) or "body"
        return _error(JSONResponse, 400, f"{where}: {first['msg']}"[:MAX_STATUS_CHARS], "INVALID_ARGUMENT")

    @app.get("/v1/models")
    def list_models() -> dict[str, Any]:
        created = int(time.time())
        models = [{"id": service.base_model, "object": "model", "created": created, "owned_by": "tutorforge"}]
        for adapter in service.adapters.servable():
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
        in_flight.take()
        try:
            return _chat_completions(body)
        except BaseException:
            in_flight.give_back()
            raise

    def _chat_completions(body: ChatCompletionRequest) -> Any:
        logprobs = checked_logprobs(body, body.n)
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
            logprobs=logprobs,
            frequency_penalty=body.frequency_penalty or 0.0,
            presence_penalty=body.presence_penalty or 0.0,
        )
        params = replace(params, response_format=response_format)
        adapter = NO_ADAPTER if body.model == service.base_model else adapter_for(body.model)
        messages = [{"role": m.role, "content": _text_of(m.content)} for m in body.messages]
        turns = start_choices(
            lambda seed: service.chat(
                messages,
                replace(params, seed=seed),
                adapter=adapter,
                fallback_to_base=body.fallback_to_base,
                retrieval=retrieval,
                program=body.program,
            ),
            body.n,
            body.seed,
        )
        reply = _Reply(id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()), model=body.model or service.base_model)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(
                _sse(reply, turns, include_usage, logprobs is not None, in_flight), media_type="text/event-stream"
            )
        try:
            return whole_reply(reply.header("chat.completion"), turns, logprobs is not None)
        finally:
            in_flight.give_back()

    if connection is not None:
        mount_console(app, connection)
    return app


@dataclass
class _Reply:
    id: str
    created: int
    model: str

    def header(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}


def _sse(reply: _Reply, turns: list[ChatTurn], include_usage: bool, logprobs: bool, in_flight: Limit) -> Iterator[str]:
    try:
        yield from streamed_reply(reply.header("chat.completion.chunk"), turns, include_usage, logprobs)
    finally:
        # The reply ended or the client went away: free the request's slot.
        in_flight.give_back()


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


def _retrieval_options(value: bool | RetrievalBody) -> RetrievalOptions:
    if isinstance(value, bool):
        return RetrievalOptions(enabled=value)
    return RetrievalOptions(enabled=value.enabled, limit=value.limit, score_threshold=value.score_threshold)


def _text_of(content: str | list[dict[str, Any]] | None) -> str:
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if part.get("type") == "text")
    return content or ""


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


def start_http_server(
    service: InferenceService,
    host: str,
    port: int,
    api_token: str | None = None,
    connection: Connections | None = None,
    access: AccessPolicy | None = None,
    tls: Any = None,
) -> HttpServer:
    """`tls` (TlsSettings) serves HTTPS from its certificate files (client certificates required with
    require_client_cert)."""
    import uvicorn

    config = uvicorn.Config(
        create_app(service, api_token, connection, access), host=host, port=port, log_level="warning", access_log=False,
        **(uvicorn_options(tls) if tls is not None else {}),
    )
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
