"""The training service's domain: start, follow, cancel and resume training jobs. Plain Python; the gRPC
servicer only translates. Job records and events are durable (`JobManager(store, "training")`)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from tutorforge.artifacts.store import ArtifactStore
from tutorforge.core.errors import FailedPrecondition
from tutorforge.core.jobs import JobDirectory, JobManager, JobRecord, JobReporter, JobState
from tutorforge.core.settings import Settings
from tutorforge.core.telemetry.experiments import tracked_job
from tutorforge.training.config import TrainingSpec
from tutorforge.training.ray_cluster import shutdown_ray
from tutorforge.training.runner import RESUME_HINT, PreparedRun, TrainingRunner

log = logging.getLogger(__name__)



class TrainingService:
    def __init__(self, settings: Settings, store: ArtifactStore):
        self.settings = settings
        self.jobs = JobManager(store, "training", lease_seconds=settings.jobs.lease_seconds)
        self.job_directory = JobDirectory(self.jobs)
        self.runner = TrainingRunner(settings, store)
        # A run whose replica stopped cannot be reattached (a local Ray cluster dies with its driver): the
        # replica that takes over its lease continues it from its last checkpoint, or marks it failed.
        resume = self._resume_interrupted if settings.training.resume_interrupted else None
        self.jobs.recover_interrupted(RESUME_HINT, resume)

    def default_spec(self, dataset: str, adapter_name: str) -> TrainingSpec:
        """A spec with the resource defaults of this deployment's settings."""
        spec = TrainingSpec(dataset=dataset, adapter_name=adapter_name)
        spec.resources.num_workers = self.settings.training.num_workers
        spec.resources.cpus_per_worker = self.settings.training.cpus_per_worker
        spec.resources.gpus_per_worker = self.settings.training.gpus_per_worker
        return spec

    def start(self, spec: TrainingSpec) -> JobRecord:
        prepared = self.runner.prepare(spec)
        record = self.jobs.create(
            labels={
                "dataset": spec.dataset,
                "dataset_version": prepared.dataset.version,
                "adapter_name": spec.adapter_name,
                **{
                    k: v
                    for k, v in spec.metadata.items()
                    if k in ("subject", "grade_level", "teaching_style")
                },
            },
            parameters=spec.to_json(),
        )
        self.jobs.start(record.id, self._work(record.id, prepared))
        return self.jobs.get(record.id)

    def resume(self, job_id: str) -> JobRecord:
        record = self.jobs.get(job_id)
        if record.state not in (JobState.FAILED, JobState.CANCELLED):
            raise FailedPrecondition(
                f"job {job_id} is {record.state.value.lower()}; only failed or cancelled runs can be resumed"
            )
        prepared = self.runner.prepare(TrainingSpec.from_json(record.parameters))
        self.jobs.reopen(job_id, "resuming from the last checkpoint")
        self.jobs.start(job_id, self._work(job_id, prepared))
        return self.jobs.get(job_id)

    def _resume_interrupted(self, record: JobRecord) -> None:
        prepared = self.runner.prepare(TrainingSpec.from_json(record.parameters))
        self.jobs.requeue(record.id, "the replica running it stopped; resuming from the last checkpoint")
        self.jobs.start(record.id, self._work(record.id, prepared))

    def _work(self, job_id: str, prepared: PreparedRun) -> Callable[[JobReporter], str]:
        def work(reporter: JobReporter) -> str:
            with tracked_job(self.settings, self.jobs, reporter, prepared.spec.to_json()) as tracked:
                adapter = self.runner.run(job_id, prepared, tracked)
                self.jobs.update(job_id, labels={"adapter_version": adapter.version})
                for name, data in self.runner.publisher.run_artifacts(job_id, adapter):
                    tracked.run.log_artifact(name, data)
            return adapter.name

        return work

    def wait(self, job_id: str, timeout: float | None = None) -> JobRecord:
        return self.jobs.wait(job_id, timeout)

    def shutdown(self) -> None:
        """Stop the runs this process drives. With `resume_interrupted` they are queued for the next replica
        to continue from their last checkpoint; else recorded as interrupted, for ResumeJob."""
        self.jobs.stop_adopting()
        for job_id in self.runner.abort_all():
            # The job's own thread records the interruption as it unwinds; give it a moment.
            ended = self.jobs.wait(job_id, timeout=15).state.terminal
            if self.settings.training.resume_interrupted:
                # The next replica (or this one, restarted) continues it from the last checkpoint.
                self.jobs.hand_over(job_id, "the replica running it stopped; the next one resumes it from the last checkpoint")
            elif not ended:
                self.jobs.update(
                    job_id,
                    state=JobState.FAILED,
                    message="interrupted by a service shutdown",
                    error=f"the service stopped while this job was running; {RESUME_HINT}",
                )
        shutdown_ray()
