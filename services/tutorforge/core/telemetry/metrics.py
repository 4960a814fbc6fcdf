"""Every Prometheus metric tutorforge exports, and the small `observe_*` hooks the services call.

Names follow Prometheus conventions: a `tutorforge_` prefix, the unit in the name (`_seconds`, `_bytes`,
`_tokens`), `_total` on counters. Label values come from bounded sets only: gRPC methods that are
registered, route templates, search modes, job kinds and states, and adapter names that the engine has
loaded (`base` for the base model) — never free text from a request.

Values that are a state rather than an event (queue depth, batch size, KV-cache tokens, loaded adapters,
collection size, active jobs) are read at scrape time by one collector, so the serving path pays nothing
for them. The process collector of prometheus_client (registered by default) adds
`process_resident_memory_bytes` and `process_cpu_seconds_total`.

Served on `tutorforge serve --metrics-port N` (`TUTORFORGE_SERVER__METRICS_PORT`) at `/metrics`."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from tutorforge.core.errors import InvalidArgument
from tutorforge.core.names import model_label
from tutorforge.core.telemetry import tracing

if TYPE_CHECKING:
    from tutorforge.core.runtime import Runtime
    from tutorforge.inference.types import GenerationStream, GenerationSummary

log = logging.getLogger(__name__)

# Latency buckets from 5 ms (a cached lookup) to 2 min (a long generation on CPU).
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

# ---- gRPC and HTTP servers --------------------------------------------------------------------------

GRPC_HANDLED = Counter(
    "tutorforge_grpc_server_handled_total",
    "gRPC calls completed by the server, by service, method and status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
GRPC_DURATION = Histogram(
    "tutorforge_grpc_server_handling_seconds",
    "Time from receiving a gRPC call to its last response message.",
    ["grpc_service", "grpc_method"],
    buckets=_LATENCY_BUCKETS,
)
HTTP_REQUESTS = Counter(
    "tutorforge_http_requests_total",
    "HTTP requests to the OpenAI-compatible API, by method, route template and status code.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "tutorforge_http_request_duration_seconds",
    "Time from an HTTP request to its response headers (a streamed body continues after).",
    ["method", "route"],
    buckets=_LATENCY_BUCKETS,
)

# ---- inference ----------------------------------------------------------------------------------------

INFERENCE_REQUESTS = Counter(
    "tutorforge_inference_requests_total",
    "Generations finished, by adapter (`base` = the base model) and finish reason (stop, length, cancelled, error).",
    ["adapter", "finish_reason"],
)
PROMPT_TOKENS = Counter(
    "tutorforge_inference_prompt_tokens_total", "Prompt tokens of finished generations, by adapter.", ["adapter"]
)
GENERATED_TOKENS = Counter(
    "tutorforge_inference_generated_tokens_total",
    "Tokens generated, by adapter; rate() of it is the served tokens/s.",
    ["adapter"],
)
TIME_TO_FIRST_TOKEN = Histogram(
    "tutorforge_inference_time_to_first_token_seconds",
    "Time from submitting a generation to its first token (queue + prefill), by adapter.",
    ["adapter"],
    buckets=_LATENCY_BUCKETS,
)
GENERATION_DURATION = Histogram(
    "tutorforge_inference_request_duration_seconds",
    "Time from submitting a generation to its last token, by adapter.",
    ["adapter"],
    buckets=_LATENCY_BUCKETS,
)

# ---- retrieval ----------------------------------------------------------------------------------------

INGESTED_CHUNKS = Counter("tutorforge_retrieval_ingested_chunks_total", "Chunks embedded and stored by ingestion.")
SEARCH_DURATION = Histogram(
    "tutorforge_retrieval_search_duration_seconds",
    "Search latency (query embedding + vector store), by requested mode.",
    ["mode"],
    buckets=_LATENCY_BUCKETS,
)

# ---- jobs ---------------------------------------------------------------------------------------------

JOBS_FINISHED = Counter(
    "tutorforge_jobs_finished_total",
    "Jobs that ended, by kind (dataset, training, optimization, evaluation) and final state.",
    ["kind", "state"],
)

# ---- training -----------------------------------------------------------------------------------------

TRAINING_STEPS = Counter("tutorforge_training_steps_total", "Optimizer steps of training runs driven by this process.")
TRAINING_STEP_DURATION = Histogram(
    "tutorforge_training_step_duration_seconds",
    "Wall time of one optimizer step (all micro-batches, all workers).",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300),
)
TRAINING_TOKENS_PER_SECOND = Gauge(
    "tutorforge_training_tokens_per_second", "Real (non-padding) tokens trained per second at the last step."
)
TRAINING_LOSS = Gauge("tutorforge_training_loss", "Training loss (per assistant token) at the last step.")
TRAINING_EVAL_LOSS = Gauge("tutorforge_training_eval_loss", "Validation loss at the last evaluation.")
TRAINING_MEMORY = Gauge(
    "tutorforge_training_memory_bytes", "Peak memory of a training worker at the last step (GPU memory on CUDA, RSS on CPU)."
)


def observe_rpc(full_method: str, code: str, seconds: float) -> None:
    """One finished gRPC call; `full_method` is '/package.Service/Method' of a registered handler."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    GRPC_HANDLED.labels(service, method, code).inc()
    GRPC_DURATION.labels(service, method).observe(seconds)


def install_http_metrics(app: Any) -> None:
    """Count and time every request of a FastAPI app, and serve each in a span continuing the caller's trace
    (W3C `traceparent` header). Added last, so it also sees requests the other middleware refuse."""

    @app.middleware("http")
    async def observe(request: Any, call_next: Callable) -> Any:
        started = time.perf_counter()
        status = 500
        with tracing.http_server_span(request.method, request.url.path, request.headers):
            try:
                response = await call_next(request)
                status = response.status_code
                return response
            finally:
                route = request.scope.get("route")
                # The route's template (never the raw path) keeps the label set bounded.
                template = getattr(route, "path", "unmatched")
                HTTP_REQUESTS.labels(request.method, template, str(status)).inc()
                HTTP_DURATION.labels(request.method, template).observe(time.perf_counter() - started)


def observe_generation(stream: GenerationStream, summary: GenerationSummary) -> None:
    """A generation finished (called by the engine's thread as it hands over the summary)."""
    adapter = model_label(summary.adapter)
    INFERENCE_REQUESTS.labels(adapter, summary.finish_reason).inc()
    PROMPT_TOKENS.labels(adapter).inc(summary.prompt_tokens)
    GENERATED_TOKENS.labels(adapter).inc(summary.completion_tokens)
    if summary.completion_tokens:
        TIME_TO_FIRST_TOKEN.labels(adapter).observe(summary.time_to_first_token)
    GENERATION_DURATION.labels(adapter).observe(summary.duration)
    tracing.record_generation(stream, summary)


def observe_generation_error(stream: GenerationStream) -> None:
    INFERENCE_REQUESTS.labels(model_label(stream.adapter), "error").inc()


@contextmanager
def observe_search(mode: str, limit: int) -> Iterator[None]:
    started = time.perf_counter()
    try:
        with tracing.span("search", {"tutorforge.search.mode": mode, "tutorforge.search.limit": limit}):
            yield
    finally:
        SEARCH_DURATION.labels(mode).observe(time.perf_counter() - started)


def observe_job_state(kind: str, job_id: str, state: str, terminal: bool) -> None:
    """A job entered `state`: active ones are counted at scrape time, ended ones once here."""
    with _jobs_lock:
        if terminal:
            _active_jobs.pop((kind, job_id), None)
            JOBS_FINISHED.labels(kind, state).inc()
        else:
            _active_jobs[(kind, job_id)] = state


def observe_training_step(record: dict[str, Any]) -> None:
    """One step record of a training run, as the workers report it (see training/loop.py)."""
    TRAINING_STEPS.inc()
    if "step_seconds" in record:
        TRAINING_STEP_DURATION.observe(float(record["step_seconds"]))
    if "tokens_per_second" in record:
        TRAINING_TOKENS_PER_SECOND.set(float(record["tokens_per_second"]))
    if "loss" in record:
        TRAINING_LOSS.set(float(record["loss"]))
    if "eval_loss" in record:
        TRAINING_EVAL_LOSS.set(float(record["eval_loss"]))
    if "memory_bytes" in record:
        TRAINING_MEMORY.set(float(record["memory_bytes"]))


# ---- state read at scrape time ------------------------------------------------------------------------


class EngineOccupancy(Protocol):
    """What an inference engine reports about itself; engines without it (remote ones) report adapters only."""

    def occupancy(self) -> tuple[int, int, int]:
        """(requests waiting, requests running in the batch, tokens held in the KV cache)."""
        ...

    def loaded_adapters(self) -> list[str]: ...


_engines: weakref.WeakSet[Any] = weakref.WeakSet()
_collections: weakref.WeakSet[Any] = weakref.WeakSet()
_active_jobs: dict[tuple[str, str], str] = {}
_jobs_lock = threading.Lock()


def watch_engine(engine: Any) -> None:
    _engines.add(engine)


def watch_collection(service: Any) -> None:
    """A retrieval service whose `active_chunks()` (None until its store is open) is the collection size."""
    _collections.add(service)


class _StateCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        waiting = GaugeMetricFamily("tutorforge_inference_queued_requests", "Generations waiting to join the batch.")
        running = GaugeMetricFamily("tutorforge_inference_running_requests", "Generations in the running batch.")
        cached = GaugeMetricFamily(
            "tutorforge_inference_kv_cache_tokens", "Token slots held in the KV cache of the running batch (padding included)."
        )
        loaded = GaugeMetricFamily(
            "tutorforge_inference_adapter_loaded", "1 for each adapter loaded in the engine.", labels=["adapter"]
        )
        totals = [0, 0, 0]
        has_occupancy = False
        adapters: set[str] = set()
        for engine in list(_engines):
            try:
                if hasattr(engine, "occupancy"):
                    totals = [a + b for a, b in zip(totals, engine.occupancy(), strict=True)]
                    has_occupancy = True
                adapters.update(engine.loaded_adapters())
            except Exception:  # one closed or unreachable engine must not fail the whole scrape
                log.debug("engine state unavailable for /metrics", exc_info=True)
        if has_occupancy:
            for family, value in zip((waiting, running, cached), totals, strict=True):
                family.add_metric([], value)
                yield family
        for name in sorted(adapters):
            loaded.add_metric([name], 1)
        yield loaded

        sizes = []
        for service in list(_collections):
            try:
                size = service.active_chunks()
            except Exception:  # a closed collection (a stopped server not yet collected) has no size
                log.debug("collection size unavailable for /metrics", exc_info=True)
                continue
            if size is not None:
                sizes.append(size)
        if sizes:
            yield GaugeMetricFamily(
                "tutorforge_retrieval_collection_chunks", "Active chunks in the vector collection.", value=sum(sizes)
            )

        jobs = GaugeMetricFamily(
            "tutorforge_jobs", "Jobs of this process that are queued or running, by kind and state.", labels=["kind", "state"]
        )
        with _jobs_lock:
            counts: dict[tuple[str, str], int] = {}
            for (kind, _), state in _active_jobs.items():
                counts[(kind, state)] = counts.get((kind, state), 0) + 1
        for (kind, state), count in sorted(counts.items()):
            jobs.add_metric([kind, state], count)
        yield jobs


REGISTRY.register(_StateCollector())


def serve_metrics(runtime: Runtime) -> int:
    """Serve /metrics on settings.server.metrics_port (0 = off) until the runtime closes; the bound port."""
    settings = runtime.settings.server
    if not settings.metrics_port:
        return 0
    try:
        server, thread = start_http_server(settings.metrics_port, addr=settings.host)
    except OSError as error:
        raise InvalidArgument(
            f"cannot serve metrics on {settings.host}:{settings.metrics_port} ({error}); choose another --metrics-port"
        ) from error

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    runtime.on_shutdown(stop)
    log.info("metrics on http://%s:%d/metrics", settings.host, server.server_port)
    return server.server_port
