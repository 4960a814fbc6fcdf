"""Helpers of the optimization tests: the bundled starter dialogues as a stored dataset version, following runs."""

from __future__ import annotations

import json
from pathlib import Path

from tutorforge.artifacts.datasets import DatasetInfo, DatasetRepository
from tutorforge.artifacts.store import ArtifactStore
from tutorforge.v1 import common_pb2, jobs_pb2, optimization_pb2_grpc

STARTER = Path(__file__).resolve().parents[2] / "services/tutorforge/samples/dialogues/starter.jsonl"


def store_starter(
    store: ArtifactStore, name: str = "starter", validation: int = 7, version: str = "5a17e7"
) -> DatasetInfo:
    """The starter dialogues as dataset `name`: the last `validation` records are the validation split."""
    records = [json.loads(line) for line in STARTER.read_text().splitlines() if line.strip()]
    for index, record in enumerate(records):
        record["id"] = f"starter-{index}"
    cut = len(records) - validation
    info = DatasetInfo(name=name, version=version, content_hash=version)
    return DatasetRepository(store).save(info, {"train": records[:cut], "validation": records[cut:]})


def wait_for(stub: optimization_pb2_grpc.OptimizationServiceStub, run_id: str) -> tuple[common_pb2.Job, list]:
    """Follow WatchJob to the end; returns the final run and every event."""
    events = [response.event for response in stub.WatchJob(jobs_pb2.WatchJobRequest(job_id=run_id), timeout=1500)]
    return stub.GetJob(jobs_pb2.GetJobRequest(job_id=run_id)).job, events
