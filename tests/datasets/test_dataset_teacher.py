"""Dataset generation through a teacher endpoint: the datasets service writes dialogues through
tutorforge's own OpenAI-compatible HTTP door (inference + real SmolLM2 on another loopback server) with
the openai client, or through the TGI and vLLM stand-ins of the inference tests, instead of its own
inference service; an unreachable teacher is refused up front."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import grpc
import pytest
from dataset_helpers import store_snapshot

from tutorforge.artifacts.datasets import DatasetRepository
from tutorforge.datasets.generation import TURN_SCHEMAS
from tutorforge.v1 import common_pb2, datasets_pb2, datasets_pb2_grpc, jobs_pb2

# The repository root, so that the inference tests' stand-in servers import under plain `pytest` too.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.inference.fake_servers import FakeServer, Recorder, tgi_app, vllm_app  # noqa: E402


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_synthetic_generation_through_the_openai_compatible_teacher(serve, tmp_path):
    port = _free_port()
    # The teacher: inference only, with its HTTP door. The datasets server hosts no inference at all.
    serve("inference", inference__threads=1, server__http_port=port)
    running, channel = serve("datasets", addresses__inference="127.0.0.1:1")
    stub = datasets_pb2_grpc.DatasetServiceStub(channel)
    teacher = f"http://127.0.0.1:{port}/v1"
    source = datasets_pb2.SyntheticSource(topic="fractions", num_conversations=1, num_exchanges=1, teacher=teacher)
    job = stub.CreateDataset(datasets_pb2.CreateDatasetRequest(
        name="taught", sources=[datasets_pb2.DatasetSource(synthetic=source)])).job
    events = [r.event for r in stub.WatchJob(jobs_pb2.WatchJobRequest(job_id=job.id), timeout=900)]
    job = stub.GetJob(jobs_pb2.GetJobRequest(job_id=job.id)).job
    assert job.state in (common_pb2.JOB_STATE_SUCCEEDED, common_pb2.JOB_STATE_FAILED), job
    assert any("synthetic:fractions: attempt 1" in e.message for e in events)
    # Whatever the small model wrote went through the teacher: kept, or dropped with a reason.
    if job.state == common_pb2.JOB_STATE_SUCCEEDED:
        version = stub.GetDataset(datasets_pb2.GetDatasetRequest(name="taught")).dataset
        assert '"teacher"' in version.manifest.parameters_json and teacher in version.manifest.parameters_json
        records = list(DatasetRepository(running.runtime.store).records("taught", "", "train"))
        records += list(DatasetRepository(running.runtime.store).records("taught", "", "validation"))
        assert records and all(r["conversations"][-1]["content"].endswith("?") for r in records)
    else:
        assert "no record survived" in job.error


@pytest.mark.parametrize("kind", ["tgi", "openai"])
def test_synthetic_generation_through_a_tgi_or_vllm_teacher(serve, kind):
    """Each turn goes to the teacher with its schema in the server's own form (TGI's grammar, OpenAI's
    response_format); the stand-ins answer with a document valid against it, so every dialogue is kept."""
    recorder = Recorder()
    with FakeServer(tgi_app(recorder, adapters=set()) if kind == "tgi" else vllm_app(recorder)) as fake:
        running, channel = serve("datasets", addresses__inference="127.0.0.1:1", datasets__teacher_kind=kind)
        stub = datasets_pb2_grpc.DatasetServiceStub(channel)
        teacher = fake.url if kind == "tgi" else f"{fake.url}/v1"
        source = datasets_pb2.SyntheticSource(topic="fractions", num_conversations=1, num_exchanges=2, teacher=teacher)
        job = stub.CreateDataset(datasets_pb2.CreateDatasetRequest(
            name="taught", sources=[datasets_pb2.DatasetSource(synthetic=source)])).job
        list(stub.WatchJob(jobs_pb2.WatchJobRequest(job_id=job.id), timeout=300))
    job = stub.GetJob(jobs_pb2.GetJobRequest(job_id=job.id)).job
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job.error

    turns = ["question", "reply", "answer", "reply"]
    sent = [body["response_format"] for path, body in recorder.requests if path == "/v1/chat/completions"]
    if kind == "tgi":
        assert sent == [{"type": "json", "value": TURN_SCHEMAS[turn]} for turn in turns]
    else:
        assert sent == [{"type": "json_schema", "json_schema": {"name": turn, "schema": TURN_SCHEMAS[turn], "strict": True}}
                        for turn in turns]
    repository = DatasetRepository(running.runtime.store)
    records = [*repository.records("taught", "", "train"), *repository.records("taught", "", "validation")]
    assert [[t["role"] for t in r["conversations"]] for r in records] == [["user", "assistant", "user", "assistant"]]
    # The text inside each JSON document, not the document itself.
    assert all(t["content"].startswith("Hello from base,") for t in records[0]["conversations"])
    manifest = stub.GetDataset(datasets_pb2.GetDatasetRequest(name="taught")).dataset.manifest.parameters_json
    assert f'"kind": "{kind}"' in manifest and teacher in manifest


@pytest.mark.parametrize("kind", ["synthetic", "documents"])
def test_unreachable_teacher_is_refused_before_the_job(serve, kind):
    running, channel = serve("datasets")
    stub = datasets_pb2_grpc.DatasetServiceStub(channel)
    before = store_snapshot(running.runtime.store)
    teacher = f"http://127.0.0.1:{_free_port()}/v1"
    source = (datasets_pb2.DatasetSource(synthetic=datasets_pb2.SyntheticSource(
        topic="fractions", num_conversations=1, num_exchanges=1, teacher=teacher))
        if kind == "synthetic" else datasets_pb2.DatasetSource(documents=datasets_pb2.DocumentSource(teacher=teacher)))
    with pytest.raises(grpc.RpcError) as error:
        stub.CreateDataset(datasets_pb2.CreateDatasetRequest(name="refused", sources=[source]))
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"{kind}.teacher" in error.value.details() and teacher in error.value.details()
    assert store_snapshot(running.runtime.store) == before


def test_unreachable_configured_teacher_names_the_setting(serve):
    running, channel = serve("datasets", datasets__teacher_url=f"http://127.0.0.1:{_free_port()}",
                             addresses__inference="127.0.0.1:1")
    stub = datasets_pb2_grpc.DatasetServiceStub(channel)
    source = datasets_pb2.DatasetSource(synthetic=datasets_pb2.SyntheticSource(topic="fractions", num_conversations=1, num_exchanges=1))
    with pytest.raises(grpc.RpcError) as error:
        stub.CreateDataset(datasets_pb2.CreateDatasetRequest(name="refused", sources=[source]))
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "datasets.teacher_url" in error.value.details()
    # "inference" overrides the configured teacher: the request is accepted and becomes a job, which turns
    # to the (here unreachable) inference service. Waited for: a job still generating when its server
    # stops would call through a closed channel, which crashes grpc.
    source.synthetic.teacher = "inference"
    job = stub.CreateDataset(datasets_pb2.CreateDatasetRequest(name="accepted", sources=[source])).job
    list(stub.WatchJob(jobs_pb2.WatchJobRequest(job_id=job.id), timeout=120))
    job = stub.GetJob(jobs_pb2.GetJobRequest(job_id=job.id)).job
    assert job.state == common_pb2.JOB_STATE_FAILED and "needs the inference service" in job.error
