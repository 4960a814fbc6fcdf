"""Durable long-running jobs: records and event histories in the artifact store, progress reporting,
cancellation, and watching (replay past events, then follow new ones until the job ends).

Datasets, training and optimization all run their work through a `JobManager`."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from tutorforge.core.errors import Cancelled, FailedPrecondition, NotFound, TutorforgeError
from tutorforge.core.storage import ArtifactStore

log = logging.getLogger(__name__)


class JobState(str, Enum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


@dataclass
class JobEvent:
    job_id: str
    sequence: int
    time: float
    state: JobState
    progress: float = 0.0
    message: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    step: int = 0
    total_steps: int = 0


@dataclass
class JobRecord:
    id: str
    kind: str
    state: JobState = JobState.QUEUED
    progress: float = 0.0
    message: str = ""
    error: str = ""
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    metrics: dict[str, float] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    result: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    cancel_requested: bool = False

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobRecord:
        return cls(**{**data, "state": JobState(data["state"])})


class JobReporter:
    """Handed to a job's work function: reports progress and tells it when to stop."""

    def __init__(self, manager: JobManager, job_id: str):
        self._manager = manager
        self.job_id = job_id

    @property
    def cancel_requested(self) -> bool:
        return self._manager.get(self.job_id).cancel_requested

    def check_cancelled(self) -> None:
        if self.cancel_requested:
            raise Cancelled(f"job {self.job_id} was cancelled")

    def progress(
        self,
        message: str = "",
        *,
        progress: float | None = None,
        step: int = 0,
        total_steps: int = 0,
        metrics: dict[str, float] | None = None,
    ) -> None:
        if progress is None and total_steps:
            progress = min(1.0, step / total_steps)
        self._manager.update(
            self.job_id, message=message, progress=progress, step=step, total_steps=total_steps, metrics=metrics
        )


class JobManager:
    """Job records of one kind under `jobs/<kind>/<id>/` in the artifact store."""

    def __init__(self, store: ArtifactStore, kind: str):
        self.store = store
        self.kind = kind
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._threads: dict[str, threading.Thread] = {}
        self._event_cache: dict[str, list[dict[str, Any]]] = {}

    def _key(self, job_id: str, name: str) -> str:
        if not job_id or "/" in job_id or ".." in job_id:
            raise NotFound(f"no {self.kind} job {job_id!r}")
        return f"jobs/{self.kind}/{job_id}/{name}"

    def create(self, labels: dict[str, str] | None = None, parameters: dict[str, Any] | None = None) -> JobRecord:
        record = JobRecord(
            id=f"{self.kind[:4]}-{uuid.uuid4().hex[:12]}",
            kind=self.kind,
            labels=dict(labels or {}),
            parameters=dict(parameters or {}),
            message="queued",
        )
        with self._lock:
            self._save(record, [])
            self._append_event(record, "queued")
        return record

    def get(self, job_id: str) -> JobRecord:
        key = self._key(job_id, "job.json")
        if not self.store.exists(key):
            raise NotFound(f"no {self.kind} job {job_id!r}: list jobs to see the known ids")
        return JobRecord.from_json(self.store.read_json(key))

    def list(self, state: JobState | None = None) -> list[JobRecord]:
        records = []
        for job_id in self.store.list(f"jobs/{self.kind}"):
            try:
                record = self.get(job_id)
            except NotFound:
                continue
            if state is None or record.state == state:
                records.append(record)
        return sorted(records, key=lambda r: r.created_at, reverse=True)

    def events(self, job_id: str, after_sequence: int = 0) -> list[JobEvent]:
        return [
            JobEvent(**{**item, "state": JobState(item["state"])})
            for item in self._history(job_id)
            if item["sequence"] > after_sequence
        ]

    def _history(self, job_id: str) -> list[dict[str, Any]]:
        """The job's raw events. Read from the store once per process: this manager is their only writer,
        and watchers poll them on every change."""
        with self._lock:
            if job_id not in self._event_cache:
                key = self._key(job_id, "events.json")
                if not self.store.exists(key):
                    self.get(job_id)
                    return []
                self._event_cache[job_id] = self.store.read_json(key)
            return self._event_cache[job_id]

    def update(
        self,
        job_id: str,
        *,
        state: JobState | None = None,
        message: str = "",
        progress: float | None = None,
        step: int = 0,
        total_steps: int = 0,
        metrics: dict[str, float] | None = None,
        result: str | None = None,
        error: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> JobRecord:
        with self._lock:
            record = self.get(job_id)
            if record.state.terminal and state is None:
                return record
            if state is not None:
                record.state = state
            if message:
                record.message = message
            if progress is not None:
                record.progress = float(progress)
            if metrics:
                record.metrics.update({k: float(v) for k, v in metrics.items()})
            if result is not None:
                record.result = result
            if error is not None:
                record.error = error
            if labels:
                record.labels.update(labels)
            record.updated_at = time.time()
            self._save(record)
            self._append_event(record, message, step=step, total_steps=total_steps, metrics=metrics)
            self._changed.notify_all()
            return record

    def request_cancel(self, job_id: str) -> JobRecord:
        with self._lock:
            record = self.get(job_id)
            if record.state.terminal:
                raise FailedPrecondition(f"job {job_id} already ended ({record.state.value}); nothing to cancel")
            record.cancel_requested = True
            self._save(record)
            if record.state == JobState.QUEUED and job_id not in self._threads:
                return self.update(job_id, state=JobState.CANCELLED, message="cancelled before it started")
            self._changed.notify_all()
            return record

    def reopen(self, job_id: str, message: str) -> JobRecord:
        """Queue an ended job again (e.g. to resume a failed or cancelled run from its checkpoint)."""
        with self._lock:
            record = self.get(job_id)
            if not record.state.terminal or job_id in self._threads:
                raise FailedPrecondition(f"job {job_id} is still {record.state.value.lower()}; only ended jobs can be resumed")
            record.cancel_requested = False
            self._save(record)
            return self.update(job_id, state=JobState.QUEUED, message=message, error="")

    def watch(self, job_id: str, after_sequence: int = 0, is_active: Callable[[], bool] = lambda: True) -> Iterator[JobEvent]:
        """Yield events after `after_sequence`, then new ones, until the job ends or the caller leaves."""
        sequence = after_sequence
        while True:
            with self._lock:
                pending = self.events(job_id, sequence)
                if not pending:
                    if self.get(job_id).state.terminal or not is_active():
                        return
                    self._changed.wait(timeout=1.0)
                    continue
            for event in pending:
                sequence = event.sequence
                yield event
            if pending[-1].state.terminal:
                return

    def start(self, job_id: str, work: Callable[[JobReporter], str]) -> None:
        """Run `work` in a background thread. It returns the job's result (e.g. a dataset version)."""
        thread = threading.Thread(target=self._run, args=(job_id, work), name=f"job-{job_id}", daemon=True)
        with self._lock:
            self._threads[job_id] = thread
        thread.start()

    def wait(self, job_id: str, timeout: float | None = None) -> JobRecord:
        thread = self._threads.get(job_id)
        if thread is not None:
            thread.join(timeout)
        return self.get(job_id)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask every job running in this process to stop and wait for them (a server shutting down): a job
        must not outlive the channels it calls other services through."""
        with self._lock:
            running = dict(self._threads)
        for job_id in running:
            try:
                self.request_cancel(job_id)
            except FailedPrecondition:
                pass  # ended meanwhile
        deadline = time.monotonic() + timeout
        for thread in running.values():
            thread.join(max(0.0, deadline - time.monotonic()))

    def recover_interrupted(self, hint: str) -> list[str]:
        """Mark jobs left QUEUED/RUNNING by a previous process as FAILED, saying how to continue."""
        recovered = []
        for record in self.list():
            if not record.state.terminal and record.id not in self._threads:
                self.update(
                    record.id,
                    state=JobState.FAILED,
                    message="interrupted by a service restart",
                    error=f"the service restarted while this job was {record.state.value.lower()}; {hint}",
                )
                recovered.append(record.id)
        return recovered

    def _run(self, job_id: str, work: Callable[[JobReporter], str]) -> None:
        reporter = JobReporter(self, job_id)
        try:
            if reporter.cancel_requested:
                raise Cancelled("cancelled before it started")
            self.update(job_id, state=JobState.RUNNING, message="running")
            result = work(reporter)
            self.update(job_id, state=JobState.SUCCEEDED, message="done", progress=1.0, result=result or "")
        except Cancelled as error:
            self.update(job_id, state=JobState.CANCELLED, message=error.message)
        except TutorforgeError as error:
            log.warning("job %s failed: %s", job_id, error.message)
            self.update(job_id, state=JobState.FAILED, message="failed", error=error.message)
        except Exception as error:  # a job must always end with a recorded state
            log.exception("job %s crashed", job_id)
            self.update(job_id, state=JobState.FAILED, message="failed", error=f"{type(error).__name__}: {error}")
        finally:
            with self._lock:
                self._threads.pop(job_id, None)

    def _save(self, record: JobRecord, events: list[dict[str, Any]] | None = None) -> None:
        self.store.write_json(self._key(record.id, "job.json"), record.to_json())
        if events is not None:
            self.store.write_json(self._key(record.id, "events.json"), events)
            self._event_cache[record.id] = list(events)

    def _append_event(
        self,
        record: JobRecord,
        message: str,
        *,
        step: int = 0,
        total_steps: int = 0,
        metrics: dict[str, float] | None = None,
    ) -> None:
        history = self._history(record.id)
        event = JobEvent(
            job_id=record.id,
            sequence=len(history) + 1,
            time=time.time(),
            state=record.state,
            progress=record.progress,
            message=message or record.message,
            metrics={k: float(v) for k, v in (metrics or {}).items()},
            step=step,
            total_steps=total_steps,
        )
        # A new list, cached only once written: a failed write leaves cache and store as they were.
        events = [*history, {**asdict(event), "state": event.state.value}]
        self.store.write_json(self._key(record.id, "events.json"), events)
        self._event_cache[record.id] = events
