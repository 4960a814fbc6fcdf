"""OpenTelemetry tracing across the services, configured by the standard OTEL_* variables.

On when OTEL_TRACES_EXPORTER names an exporter (`otlp`, `console`) or an OTLP endpoint is set
(OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), unless OTEL_SDK_DISABLED=true.
Off by default: then every helper here returns a shared no-op without importing OpenTelemetry, so tracing
costs a flag check per call site.

Context crosses services as W3C `traceparent` (the configured propagators, OTEL_PROPAGATORS) in gRPC
metadata (core/client.py injects, the server interceptor extracts) and in HTTP headers. A tutor chat
traces as: the Chat call → `chat` → RetrievalService/Search → `search` → `embed`, then `generate` with
`prefill` and `decode`, the adapter and token counts as attributes."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar

from tutorforge.core.names import model_label

if TYPE_CHECKING:
    from tutorforge.inference.types import GenerationStream, GenerationSummary

log = logging.getLogger(__name__)

_NOOP = contextlib.nullcontext()
_tracer: Any = None
_provider: Any = None
_lock = threading.Lock()
F = TypeVar("F", bound=Callable[..., Any])


def enabled() -> bool:
    return _tracer is not None


def configure(service_name: str, exporter: Any = None) -> bool:
    """Turn tracing on for this process if the environment (or a given exporter, in tests) asks for it.

    A second server in the same process shares the provider; an exporter passed in is added to it."""
    global _tracer, _provider
    if exporter is None:
        # The environment's exporter is added once per process, however many servers start in it.
        exporter = None if _provider is not None else _exporter_from_env()
        if exporter is None:
            return enabled()
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    with _lock:
        if _provider is None:
            name = os.environ.get("OTEL_SERVICE_NAME") or f"tutorforge-{service_name}"
            _provider = TracerProvider(resource=Resource.create({"service.name": name}))
            # Libraries that trace through the global API join ours; the API allows setting it once only.
            if not isinstance(trace.get_tracer_provider(), TracerProvider):
                trace.set_tracer_provider(_provider)
            _tracer = _provider.get_tracer("tutorforge")
        # In-memory export (tests) must be visible at once; real exporters batch off the request path.
        processor = SimpleSpanProcessor if isinstance(exporter, InMemorySpanExporter) else BatchSpanProcessor
        _provider.add_span_processor(processor(exporter))
    log.info("tracing on: exporting spans with %s", type(exporter).__name__)
    return True


def shutdown() -> None:
    """Flush and stop (tests, and the end of a process); tracing is off afterwards."""
    global _tracer, _provider
    with _lock:
        if _provider is not None:
            _provider.shutdown()
        _tracer = _provider = None


def _exporter_from_env() -> Any:
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    kind = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if kind == "none" or (not kind and not endpoint):
        return None
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if kind not in ("", "otlp"):
        log.warning("OTEL_TRACES_EXPORTER=%s is not supported (use otlp, console or none): tracing stays off", kind)
        return None
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
    if protocol and protocol != "http/protobuf":
        log.warning("OTEL_EXPORTER_OTLP_PROTOCOL=%s: tutorforge ships the http/protobuf exporter; using it", protocol)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    # Reads the endpoint, headers, timeout and compression from the OTEL_EXPORTER_OTLP_* variables itself.
    return OTLPSpanExporter()


# ---- spans ----------------------------------------------------------------------------------------------


def span(name: str, attributes: Mapping[str, Any] | None = None) -> contextlib.AbstractContextManager[Any]:
    """A child span of the current one for the `with` block (no-op when tracing is off)."""
    if _tracer is None:
        return _NOOP
    return _tracer.start_as_current_span(name, attributes=dict(attributes or {}))


def traced(name: str) -> Callable[[F], F]:
    """Decorator: the function runs in a span called `name`."""

    def decorate(function: F) -> F:
        @wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if _tracer is None:
                return function(*args, **kwargs)
            with _tracer.start_as_current_span(name):
                return function(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def current() -> Any:
    """The current context, to parent spans recorded later in another thread; None when off."""
    if _tracer is None:
        return None
    from opentelemetry import context

    return context.get_current()


@contextlib.contextmanager
def _server_span(name: str, carrier: Mapping[str, str], attributes: dict[str, Any]) -> Iterator[Any]:
    from opentelemetry import propagate, trace

    parent = propagate.extract(carrier)
    with _tracer.start_as_current_span(name, context=parent, kind=trace.SpanKind.SERVER, attributes=attributes) as active:
        yield active


def grpc_server_span(full_method: str, context: Any) -> contextlib.AbstractContextManager[Any]:
    """The span of one gRPC call (`context`: its ServicerContext), continuing the caller's trace from its metadata."""
    if _tracer is None:
        return _NOOP
    carrier = {item[0]: item[1] for item in context.invocation_metadata() or () if isinstance(item[1], str)}
    service, _, method = full_method.lstrip("/").rpartition("/")
    attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
    return _server_span(full_method.lstrip("/"), carrier, attributes)


def http_server_span(method: str, path: str, headers: Mapping[str, str]) -> contextlib.AbstractContextManager[Any]:
    if _tracer is None:
        return _NOOP
    return _server_span(f"{method} {path}", headers, {"http.request.method": method, "url.path": path})


def inject(metadata: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """`metadata` plus the current trace context (W3C traceparent), for an outgoing gRPC call."""
    if _tracer is None:
        return metadata
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [*metadata, *carrier.items()]


def record_generation(stream: GenerationStream, summary: GenerationSummary) -> None:
    """The `generate` span of a finished generation and its `prefill` (queue + prompt, up to the first
    token) and `decode` children, timed after the fact: the engine's scheduler thread batches many requests,
    so the spans are built from each request's own timestamps rather than held open across steps."""
    if _tracer is None or stream.trace_parent is None:
        return
    parent = stream.trace_parent
    end = time.time_ns()
    start = end - int(summary.duration * 1e9)
    first = start + int(summary.time_to_first_token * 1e9) if summary.completion_tokens else end
    attributes = {
        "tutorforge.adapter": model_label(summary.adapter),
        "tutorforge.fell_back_to_base": stream.fell_back_to_base,
        "gen_ai.usage.input_tokens": summary.prompt_tokens,
        "gen_ai.usage.output_tokens": summary.completion_tokens,
        "gen_ai.response.finish_reasons": (summary.finish_reason,),
    }
    from opentelemetry import trace

    generate = _tracer.start_span("generate", context=parent, attributes=attributes, start_time=start)
    inside = trace.set_span_in_context(generate, parent)
    _tracer.start_span(
        "prefill", context=inside, start_time=start, attributes={"gen_ai.usage.input_tokens": summary.prompt_tokens}
    ).end(end_time=first)
    _tracer.start_span(
        "decode", context=inside, start_time=first, attributes={"gen_ai.usage.output_tokens": summary.completion_tokens}
    ).end(end_time=end)
    generate.end(end_time=end)
