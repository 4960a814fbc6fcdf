"""TrainingClient: LoRA fine-tuning jobs on Ray Train; a succeeded job publishes its adapter."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from tutorforge.client.connection import Connection
from tutorforge.client.convert import enum_value, message
from tutorforge.client.jobs import JobClient, JobHandle, JobRpcs
from tutorforge.v1 import common_pb2, training_pb2_grpc
from tutorforge.v1 import training_pb2 as pb


class TrainingClient(JobClient):
    JOBS = JobRpcs(
        get="GetJob", get_request=pb.GetJobRequest, watch="WatchJob", watch_request=pb.WatchJobRequest,
        cancel="CancelJob", cancel_request=pb.CancelJobRequest,
    )

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
        request = pb.StartTrainingRequest(
            dataset=dataset,
            dataset_version=dataset_version,
            adapter_name=adapter_name,
            lora=message(pb.LoraConfig, lora, "lora"),
            arguments=message(pb.TrainingArguments, arguments, "arguments"),
            resources=pb.ResourceConfig(num_workers=num_workers),
            metadata=dict(metadata or {}),
        )
        return self.job(self.connection.unary(self.stub.StartTraining, request, "start").job)

    def jobs(self, state: str | int = "unspecified", page_size: int = 100) -> Iterator[common_pb2.Job]:
        """Training jobs, newest first, optionally in one state (queued, running, succeeded, ...)."""
        token = ""
        wanted = enum_value(common_pb2.JobState, "JOB_STATE_", state, "state")
        while True:
            request = pb.ListJobsRequest(page_size=page_size, page_token=token, state=wanted)
            page = self.connection.unary(self.stub.ListJobs, request, "read")
            yield from page.jobs
            token = page.next_page_token
            if not token:
                return

    def resume(self, job_id: str) -> JobHandle:
        """Continue a failed or cancelled run from its last checkpoint."""
        return self.job(self.connection.unary(self.stub.ResumeJob, pb.ResumeJobRequest(job_id=job_id), "start").job)
