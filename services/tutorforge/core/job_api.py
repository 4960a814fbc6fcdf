"""The one job API of every job-running service (datasets, training, optimization): GetJob, ListJobs,
WatchJob and CancelJob with the shared messages of jobs.proto, translated to a `JobDirectory` (core/jobs.py).
`JobServicer` is mixed into each servicer ahead of its generated base class. ResumeJob is served only where a
job can continue (training)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from tutorforge.core.convert import event_to_proto, job_state_from_proto, job_to_proto
from tutorforge.core.jobs import JobDirectory
from tutorforge.v1 import jobs_pb2


class JobServicer:
    """GetJob, ListJobs, WatchJob and CancelJob for a servicer that sets `job_directory`."""

    job_directory: JobDirectory

    def GetJob(self, request: jobs_pb2.GetJobRequest, context: grpc.ServicerContext) -> jobs_pb2.GetJobResponse:
        return jobs_pb2.GetJobResponse(job=job_to_proto(self.job_directory.get(request.job_id)))

    def ListJobs(self, request: jobs_pb2.ListJobsRequest, context: grpc.ServicerContext) -> jobs_pb2.ListJobsResponse:
        records, token = self.job_directory.list(
            request.kind, job_state_from_proto(request.state), request.page_size, request.page_token
        )
        return jobs_pb2.ListJobsResponse(jobs=[job_to_proto(r) for r in records], next_page_token=token)

    def WatchJob(self, request: jobs_pb2.WatchJobRequest, context: grpc.ServicerContext) -> Iterator[jobs_pb2.WatchJobResponse]:
        for event in self.job_directory.watch(request.job_id, request.after_sequence, context.is_active):
            yield jobs_pb2.WatchJobResponse(event=event_to_proto(event))

    def CancelJob(self, request: jobs_pb2.CancelJobRequest, context: grpc.ServicerContext) -> jobs_pb2.CancelJobResponse:
        return jobs_pb2.CancelJobResponse(job=job_to_proto(self.job_directory.cancel(request.job_id)))
