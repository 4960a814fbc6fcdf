"""The server bootstrap over real loopback gRPC: health per service, reflection, auth, message limits,
graceful shutdown on SIGTERM, and the `serve` command."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from pydantic import SecretStr
from typer.testing import CliRunner

from tutorforge.cli import app
from tutorforge.core.client import open_channel
from tutorforge.core.errors import InvalidArgument
from tutorforge.core.server import resolve_services
from tutorforge.v1 import retrieval_pb2, retrieval_pb2_grpc

RETRIEVAL = "tutorforge.v1.RetrievalService"


def test_health_is_per_service_and_reflection_lists_services(serve) -> None:
    _, channel = serve("retrieval")
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", RETRIEVAL):
        status = health.Check(health_pb2.HealthCheckRequest(service=name)).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as absent:
        health.Check(health_pb2.HealthCheckRequest(service="tutorforge.v1.TrainingService"))
    assert absent.value.code() == grpc.StatusCode.NOT_FOUND

    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    listed = {s.name for reply in replies for s in reply.list_services_response.service}
    assert {RETRIEVAL, "grpc.health.v1.Health"} <= listed


def test_api_token_guards_every_rpc_but_health(serve) -> None:
    running, channel = serve("retrieval", server__api_token=SecretStr("s3cret"))
    with pytest.raises(grpc.RpcError) as denied:
        retrieval_pb2_grpc.RetrievalServiceStub(channel).GetStats(retrieval_pb2.GetStatsRequest())
    assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "Bearer" in denied.value.details()
    ok = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=RETRIEVAL))
    assert ok.status == health_pb2.HealthCheckResponse.SERVING
    with open_channel(running.address, "s3cret") as authorized:
        stats = retrieval_pb2_grpc.RetrievalServiceStub(authorized).GetStats(retrieval_pb2.GetStatsRequest())
    assert stats.embedding_dimensions == 384


def test_message_size_limit(serve) -> None:
    _, channel = serve("retrieval", server__max_message_bytes=4096)
    with pytest.raises(grpc.RpcError) as too_big:
        retrieval_pb2_grpc.RetrievalServiceStub(channel).Search(retrieval_pb2.SearchRequest(query="x" * 10_000))
    assert too_big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_unknown_service_names_are_rejected() -> None:
    with pytest.raises(InvalidArgument, match="unknown service"):
        resolve_services(["retrieval", "mail"])
    assert resolve_services(["all"]) == ["retrieval", "datasets", "training", "optimization", "inference"]
    result = CliRunner().invoke(app, ["serve", "mail", "--port", "0"])
    assert result.exit_code != 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_sigterm_drains_in_flight_calls(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "TUTORFORGE_HOME": str(tmp_path), "TUTORFORGE_SERVER__SHUTDOWN_GRACE_SECONDS": "300",
           "TUTORFORGE_MODELS__CACHE_DIR": str(Path(__file__).resolve().parents[2] / ".cache" / "models")}
    process = subprocess.Popen(
        [sys.executable, "-m", "tutorforge", "serve", "retrieval", "--port", str(port), "--store", str(tmp_path / "store")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=600)
        stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
        # The upload stays open across SIGTERM: the call is surely in flight (its handler reading the stream,
        # however slowly a loaded machine dispatches it), and the rest of the stream must still be read.
        sentences = [f"Sentence {i} explains why calls in flight finish before the server stops." for i in range(400)]
        signalled = threading.Event()

        def upload():
            yield retrieval_pb2.IngestDocumentsRequest(
                document=retrieval_pb2.DocumentHeader(document_id="drain", filename="drain.txt")
            )
            signalled.wait(60)
            yield retrieval_pb2.IngestDocumentsRequest(content=" ".join(sentences).encode())

        future = stub.IngestDocuments.future(upload(), timeout=600)
        time.sleep(3)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert not future.done() and process.poll() is None, "the server stopped before the call ended"
        signalled.set()
        response = future.result()
        assert response.results[0].document_id == "drain" and response.results[0].chunks_written > 5
        with pytest.raises(grpc.RpcError):
            stub.GetStats(retrieval_pb2.GetStatsRequest(), timeout=5)
        assert process.wait(timeout=60) == 0
        assert '"status": "OK"' in process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
