"""TrainingClient: LoRA fine-tuning jobs on Ray Train; a succeeded job publishes its adapter."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tutorforge.client.connection import Connection
from tutorforge.client.convert import message
from tutorforge.client.jobs import JobClient, JobHandle
from tutorforge.v1 import jobs_pb2, training_pb2_grpc
from tutorforge.v1 import training_pb2 as pb


class TrainingClient(JobClient):
    def __init__(self, connection: Connection):
        super().__init__(connection, training_pb2_grpc.TrainingServiceStub(connection.channel))

    def train(
        self,
        dataset: str,
        adapter_name: str,
        *,
        dataset_version: str = "",
        num_workers: int = 0,
        lora: pb.LoraConfig | Mapping[str, Any] | None = None,
        metadata: Mapping[str, str] | None = None,
        **arguments: Any,
    ) -> JobHandle:
        """Start a LoRA run on `dataset`; keyword arguments are TrainingArguments fields (max_steps,
        learning_rate, eval_steps, ...), unset = the default recipe. The job's `result` is the adapter name,
        its `labels["adapter_version"]` the published version."""
        return self.start(pb.StartTrainingRequest(
            dataset=dataset,
            dataset_version=dataset_version,
            adapter_name=adapter_name,
            lora=message(pb.LoraConfig, lora, "lora"),
            arguments=message(pb.TrainingArguments, arguments, "arguments"),
            resources=pb.ResourceConfig(num_workers=num_workers),
            metadata=dict(metadata or {}),
        ))

    def start(self, request: pb.StartTrainingRequest) -> JobHandle:
        """Start a run from a whole request (what `train` builds; also use_unsloth, load_in_4bit, merge_and_export)."""
        return self.job(self.connection.unary(self.stub.StartTraining, request, "start").job)

    def resume(self, job_id: str) -> JobHandle:
        """Continue a failed or cancelled run from its last checkpoint."""
        return self.job(self.connection.unary(self.stub.ResumeJob, jobs_pb2.ResumeJobRequest(job_id=job_id), "start").job)
