"""Synthetic and document-grounded sources end to end: datasets + inference (the real SmolLM2) +
retrieval (real embedded Qdrant) on one loopback server. Whatever the small model writes, every generated
record is either kept with its provenance or dropped with a reason."""

from __future__ import annotations

import pytest
from dataset_helpers import fixture_bytes

from tutorforge import samples
from tutorforge.artifacts.datasets import DatasetRepository
from tutorforge.v1 import common_pb2, datasets_pb2, datasets_pb2_grpc, inference_pb2, jobs_pb2, retrieval_pb2, retrieval_pb2_grpc

pytestmark = pytest.mark.slow


def _ingest_fractions(channel) -> None:
    document = next(d for d in samples.material_documents() if d.topic == "fractions")
    stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
    requests = [
        retrieval_pb2.IngestDocumentsRequest(document=retrieval_pb2.DocumentHeader(
            document_id=document.document_id, filename=document.path.name,
            metadata=retrieval_pb2.DocumentMetadata(source=document.source, category=document.category, topic=document.topic),
        )),
        retrieval_pb2.IngestDocumentsRequest(content=document.path.read_bytes()),
    ]
    result = stub.IngestDocuments(iter(requests), timeout=300)
    assert result.results[0].chunks_written > 0, result


def test_synthetic_and_document_sources(serve):
    running, channel = serve("datasets", "inference", "retrieval")
    _ingest_fractions(channel)
    stub = datasets_pb2_grpc.DatasetServiceStub(channel)
    sources = [
        datasets_pb2.DatasetSource(file=datasets_pb2.RecordFile(filename="scenarios.jsonl", content=fixture_bytes("scenarios.jsonl"))),
        datasets_pb2.DatasetSource(synthetic=datasets_pb2.SyntheticSource(topic="fractions", num_conversations=1, num_exchanges=1)),
        datasets_pb2.DatasetSource(documents=datasets_pb2.DocumentSource(
            filters=[retrieval_pb2.MetadataFilter(field="topic", equals="fractions")], max_chunks=1, exchanges=1)),
    ]
    job = stub.CreateDataset(datasets_pb2.CreateDatasetRequest(name="generated", sources=sources)).job
    events = [r.event for r in stub.WatchJob(jobs_pb2.WatchJobRequest(job_id=job.id), timeout=1200)]
    job = stub.GetJob(jobs_pb2.GetJobRequest(job_id=job.id)).job
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job.error
    assert any("synthetic:fractions: attempt 1 " in e.message for e in events)
    assert any("documents:topic=fractions: chunk 1/1" in e.message for e in events)
    assert all(a.progress <= b.progress for a, b in zip(events, events[1:]))

    version = stub.GetDataset(datasets_pb2.GetDatasetRequest(name="generated")).dataset
    summaries = {s.source: s for s in version.manifest.sources}
    dropped = [d for d in version.manifest.dropped]
    for name in ("synthetic:fractions", "documents:topic=fractions"):
        summary = summaries[name]
        assert summary.records_read >= 1
        assert summary.records_kept + sum(d.source == name for d in dropped) == summary.records_read
    assert all(d.reason for d in dropped)

    repository = DatasetRepository(running.runtime.store)
    records = [r for split in ("train", "validation") for r in repository.records("generated", "", split)]
    grounded = [r for r in records if r["source"]["kind"] == "documents"]
    for record in grounded:
        assert record["source"]["document_id"] == "math_fractions" and record["source"]["chunk_index"] >= 0
        assert record["conversations"][0]["role"] == "system"
    synthetic = [r for r in records if r["source"]["kind"] == "synthetic"]
    for record in synthetic:
        assert record["conversations"][-1]["role"] == "assistant"

    # An adapter the registry does not know: the job fails with the inference service's own reason.
    missing = datasets_pb2.DatasetSource(synthetic=datasets_pb2.SyntheticSource(
        topic="fractions", num_conversations=1, num_exchanges=1, model=inference_pb2.ModelSelection(adapter="no-such-adapter")))
    job = stub.CreateDataset(datasets_pb2.CreateDatasetRequest(name="missing-adapter", sources=[missing])).job
    list(stub.WatchJob(jobs_pb2.WatchJobRequest(job_id=job.id), timeout=600))
    job = stub.GetJob(jobs_pb2.GetJobRequest(job_id=job.id)).job
    assert job.state == common_pb2.JOB_STATE_FAILED
    assert "synthetic generation: the inference service answered NOT_FOUND" in job.error and "no-such-adapter" in job.error
    assert [info.name for info in repository.list()] == ["generated"]
