"""Observability of a real server: Prometheus metrics scraped from `/metrics` (and by Debian's real
`prometheus`), and OpenTelemetry traces of a tutor chat that cross two processes — the inference service in
this process (in-memory exporter) and the retrieval service in a `tutorforge serve` subprocess (console
exporter) — joined only by the W3C context in the gRPC metadata."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import grpc
import openai
import pytest
from inference_helpers import generate
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import MODEL_CACHE
from tests.tooling import missing_tool
from tutorforge.artifacts.adapters import AdapterRegistry
from tutorforge.core.models import DEFAULT_CHAT_MODEL_NAME
from tutorforge.core.telemetry import tracing
from tutorforge.v1 import common_pb2, inference_pb2_grpc, retrieval_pb2, retrieval_pb2_grpc
from tutorforge.v1 import inference_pb2 as pb

GENERATED = "tutorforge_inference_generated_tokens_total"
PHOTOSYNTHESIS = (
    "Photosynthesis is how plants make their own food. Chlorophyll in the leaves absorbs sunlight, the plant "
    "takes in carbon dioxide through pores called stomata, and using light energy turns carbon dioxide and "
    "water into glucose, releasing oxygen."
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture(scope="module")
def observed(module_serve, tiny_adapters):
    metrics_port, http_port = _free_port(), _free_port()
    running, channel = module_serve(
        "inference", inference__threads=1, server__metrics_port=metrics_port, server__http_port=http_port
    )
    AdapterRegistry(running.runtime.store).register(tiny_adapters["pirate"], "pirate", DEFAULT_CHAT_MODEL_NAME)
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    stub.LoadAdapter(pb.LoadAdapterRequest(name="pirate"))
    return stub, metrics_port, http_port


def test_metrics_count_calls_tokens_and_latency_per_adapter(observed) -> None:
    stub, metrics_port, _ = observed
    before = scrape(metrics_port)
    pirate = stub.Generate(generate(adapter="pirate", max_tokens=4, ignore_eos=True))
    base = stub.Generate(generate(max_tokens=3, ignore_eos=True))
    with pytest.raises(grpc.RpcError) as refused:
        stub.Generate(generate(adapter="no-such-adapter", max_tokens=2))
    after = scrape(metrics_port)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # Tokens, requests and latency per adapter, from the engine's own summaries.
    assert delta(GENERATED, adapter="pirate") == pirate.summary.usage.completion_tokens == 4
    assert delta(GENERATED, adapter="base") == base.summary.usage.completion_tokens == 3
    assert delta("tutorforge_inference_prompt_tokens_total", adapter="pirate") == pirate.summary.usage.prompt_tokens
    assert delta("tutorforge_inference_requests_total", adapter="pirate", finish_reason="length") == 1
    assert delta("tutorforge_inference_time_to_first_token_seconds_count", adapter="pirate") == 1
    assert delta("tutorforge_inference_time_to_first_token_seconds_sum", adapter="pirate") == pytest.approx(
        pirate.summary.time_to_first_token_seconds, abs=1e-6
    )
    assert delta("tutorforge_inference_request_duration_seconds_count", adapter="base") == 1
    # The adapter label only ever holds adapters the engine has: a refused name makes no series.
    assert not any(dict(labels).get("adapter") == "no-such-adapter" for _, labels in after)
    assert value(after, "tutorforge_inference_adapter_loaded", adapter="pirate") == 1
    for gauge in ("queued_requests", "running_requests", "kv_cache_tokens"):
        assert value(after, f"tutorforge_inference_{gauge}") >= 0 and (f"tutorforge_inference_{gauge}", frozenset()) in after

    # gRPC calls per method and status code, with a latency histogram per method.
    service = "tutorforge.v1.InferenceService"
    code = refused.value.code().name
    assert code in ("NOT_FOUND", "FAILED_PRECONDITION")
    assert delta("tutorforge_grpc_server_handled_total", grpc_service=service, grpc_method="Generate", grpc_code="OK") == 2
    assert delta("tutorforge_grpc_server_handled_total", grpc_service=service, grpc_method="Generate", grpc_code=code) == 1
    assert delta("tutorforge_grpc_server_handling_seconds_count", grpc_service=service, grpc_method="Generate") == 3
    # The process collector.
    assert value(after, "process_resident_memory_bytes") > 100e6 and value(after, "process_cpu_seconds_total") > 0


def test_http_requests_are_counted_by_route_template(observed) -> None:
    _, metrics_port, http_port = observed
    before = scrape(metrics_port)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{http_port}/v1", api_key="unused", max_retries=0, timeout=120)
    completion = client.chat.completions.create(
        model="pirate", messages=[{"role": "user", "content": "Hello"}], max_tokens=3, extra_body={"retrieval": False}
    )
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="no-such-adapter", messages=[{"role": "user", "content": "Hello"}], max_tokens=3,
            extra_body={"retrieval": False},
        )
    after = scrape(metrics_port)
    route = {"method": "POST", "route": "/v1/chat/completions"}
    assert value(after, "tutorforge_http_requests_total", status="200", **route) - value(
        before, "tutorforge_http_requests_total", status="200", **route
    ) == 1
    assert value(after, "tutorforge_http_requests_total", status="404", **route) - value(
        before, "tutorforge_http_requests_total", status="404", **route
    ) == 1
    assert value(after, "tutorforge_http_request_duration_seconds_count", **route) - value(
        before, "tutorforge_http_request_duration_seconds_count", **route
    ) == 2
    assert value(after, GENERATED, adapter="pirate") - value(before, GENERATED, adapter="pirate") == (
        completion.usage.completion_tokens
    )


@pytest.mark.slow
def test_a_real_prometheus_scrapes_the_per_adapter_series(observed, tmp_path) -> None:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        missing_tool("Debian's prometheus is not installed (apt-get install prometheus)")
    stub, metrics_port, _ = observed
    answer = stub.Generate(generate(adapter="pirate", max_tokens=5, ignore_eos=True))
    expected = value(scrape(metrics_port), GENERATED, adapter="pirate")
    assert expected >= answer.summary.usage.completion_tokens
    web_port = _free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n"
        f"scrape_configs:\n  - job_name: tutorforge\n    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n"
    )
    process = subprocess.Popen(
        [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{web_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        query = urllib.parse.urlencode({"query": f'{GENERATED}{{adapter="pirate",job="tutorforge"}}'})
        deadline = time.monotonic() + 90
        result: list = []
        while time.monotonic() < deadline and not result:
            time.sleep(1)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/api/v1/query?{query}", timeout=5) as response:
                    result = json.load(response)["data"]["result"]
            except OSError:
                continue
        assert result, "prometheus never stored the per-adapter series"
        assert float(result[0]["value"][1]) == expected
        # The scrape target is healthy and the loaded-adapters gauge is there too.
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/api/v1/targets", timeout=5) as response:
            targets = json.load(response)["data"]["activeTargets"]
        assert targets[0]["health"] == "up"
        loaded = urllib.parse.urlencode({"query": "tutorforge_inference_adapter_loaded"})
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/api/v1/query?{loaded}", timeout=5) as response:
            adapters = {item["metric"]["adapter"] for item in json.load(response)["data"]["result"]}
        assert "pirate" in adapters
    finally:
        process.terminate()
        process.wait(timeout=30)


# ---- tracing ------------------------------------------------------------------------------------------


def _console_spans(text: str) -> list[dict]:
    """The spans the console exporter printed: a stream of JSON objects."""
    decoder, spans, position = json.JSONDecoder(), [], 0
    while True:
        start = text.find("{", position)
        if start < 0:
            return spans
        span, position = decoder.raw_decode(text, start)
        spans.append(span)


def _hex(number: int, width: int) -> str:
    return f"0x{number:0{width}x}"


@pytest.fixture
def retrieval_process(tmp_path):
    """`tutorforge serve retrieval` in its own process, printing its spans as JSON to stdout."""
    port, metrics_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "TUTORFORGE_HOME": str(tmp_path / "retrieval-home"),
        "TUTORFORGE_MODELS__CACHE_DIR": str(MODEL_CACHE),
        "TUTORFORGE_RETRIEVAL__CHUNK_SIZE_TOKENS": "64",
        "TUTORFORGE_RETRIEVAL__CHUNK_OVERLAP_TOKENS": "8",
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    out = (tmp_path / "spans.jsonl").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "tutorforge", "serve", "retrieval", "--port", str(port), "--metrics-port", str(metrics_port)],
        env=env, stdout=out, stderr=subprocess.DEVNULL,
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=60)
        yield process, channel, f"127.0.0.1:{port}", metrics_port, tmp_path / "spans.jsonl"
    finally:
        channel.close()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
        out.close()


@pytest.fixture
def in_memory_spans():
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    tracing.configure("test", exporter)
    yield exporter
    tracing.shutdown()


@pytest.mark.slow
def test_a_chat_traces_across_the_inference_and_retrieval_processes(serve, retrieval_process, in_memory_spans) -> None:
    process, retrieval_channel, retrieval_address, retrieval_metrics, spans_file = retrieval_process
    upload = [
        retrieval_pb2.IngestDocumentsRequest(
            document=retrieval_pb2.DocumentHeader(document_id="photosynthesis", filename="photosynthesis.md")
        ),
        retrieval_pb2.IngestDocumentsRequest(content=PHOTOSYNTHESIS.encode()),
    ]
    ingested = retrieval_pb2_grpc.RetrievalServiceStub(retrieval_channel).IngestDocuments(iter(upload))
    chunks = sum(result.chunks_written for result in ingested.results)
    # The inference service in this process reaches retrieval in the other one.
    _, channel = serve("inference", inference__threads=1, addresses__retrieval=retrieval_address)
    reply = inference_pb2_grpc.InferenceServiceStub(channel).Chat(
        pb.ChatRequest(
            messages=[common_pb2.ChatMessage(role="user", content="How do plants make their own food?")],
            parameters=pb.GenerationParameters(max_tokens=4),
            retrieval=pb.RetrievalOptions(enabled=True, limit=1, score_threshold=0.1),
        )
    )
    assert reply.citations, "the chat should be grounded on the ingested passage"

    # This process: the Chat call, the `chat` span, and `generate` with `prefill` and `decode`.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(s.name == "generate" for s in in_memory_spans.get_finished_spans()):
        time.sleep(0.1)
    spans = {s.name: s for s in in_memory_spans.get_finished_spans()}
    call, chat, generated = spans["tutorforge.v1.InferenceService/Chat"], spans["chat"], spans["generate"]
    assert chat.parent.span_id == call.context.span_id
    assert generated.parent.span_id == chat.context.span_id
    assert generated.attributes["tutorforge.adapter"] == "base"
    assert generated.attributes["gen_ai.usage.output_tokens"] == reply.summary.usage.completion_tokens
    assert generated.attributes["gen_ai.usage.input_tokens"] == reply.summary.usage.prompt_tokens
    for part in ("prefill", "decode"):
        assert spans[part].parent.span_id == generated.context.span_id
    assert spans["prefill"].end_time <= spans["decode"].start_time + 1
    trace_id = _hex(chat.context.trace_id, 32)

    # The other process: its Search call continues the chat's trace (same trace id, parent = `chat`).
    before_stop = scrape(retrieval_metrics)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    remote = [s for s in _console_spans(spans_file.read_text()) if s["context"]["trace_id"] == trace_id]
    by_name = {s["name"]: s for s in remote}
    search_call = by_name["tutorforge.v1.RetrievalService/Search"]
    assert search_call["parent_id"] == _hex(chat.context.span_id, 16)
    assert by_name["search"]["parent_id"] == search_call["context"]["span_id"]
    assert by_name["search"]["attributes"]["tutorforge.search.mode"] == "dense"
    assert by_name["embed"]["parent_id"] == by_name["search"]["context"]["span_id"]
    # The ingest (no trace of ours) is in other traces.
    assert not any(s["name"].endswith("IngestDocuments") for s in remote)

    # The retrieval process's own metrics, served by `tutorforge serve --metrics-port`.
    assert value(before_stop, "tutorforge_retrieval_search_duration_seconds_count", mode="dense") == 1
    assert value(before_stop, "tutorforge_retrieval_collection_chunks") == chunks >= 1
    assert value(before_stop, "tutorforge_retrieval_ingested_chunks_total") == chunks
