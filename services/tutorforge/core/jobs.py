"""Durable long-running jobs: records and event histories in the artifact store, progress reporting,
cancellation, and watching (replay past events, then follow new ones until the job ends).

Datasets, training and optimization all run their work through a `JobManager`.

Replicas share one store. Each job has a lease (`lease-<epoch>.json`: owner + expiry) that its owner renews
from a heartbeat thread; a job whose lease expired (its replica died) is taken over by exactly one other
replica — the one whose atomic create of the next epoch's file wins — which then resumes it or records why
it failed. A replica that finds a newer epoch than its own has lost the job and stops writing to it."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from tutorforge.artifacts.store import ArtifactStore
from tutorforge.core.errors import Cancelled, FailedPrecondition, InvalidArgument, NotFound, TutorforgeError
from tutorforge.core.names import is_id
from tutorforge.core.paging import keyset_page, newest_first
from tutorforge.core.telemetry.metrics import observe_job_state
from tutorforge.core.validation import echo

log = logging.getLogger(__name__)

_LEASE = re.compile(r"^lease-(\d+)\.json$")
_PAGE_TOKEN = re.compile(r"^\d{16}\.[a-z0-9-]+$")


def default_owner() -> str:
    """A replica's identity in job leases: host (the pod name in Kubernetes), process and a random part, so
    a restarted process is a new owner that waits for its predecessor's leases to expire."""
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:6]}"


class LeaseLost(Exception):
    """This replica no longer owns the job (its lease expired and another replica took it over)."""


@dataclass
class Lease:
    epoch: int
    owner: str
    expires_at: float


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

    def labels(self) -> dict[str, str]:
        return self._manager.get(self.job_id).labels

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

    def __init__(self, store: ArtifactStore, kind: str, *, lease_seconds: float = 30.0, owner: str = ""):
        self.store = store
        self.kind = kind
        self.owner = owner or default_owner()
        self.lease_seconds = lease_seconds
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._threads: dict[str, threading.Thread] = {}
        self._event_cache: dict[str, list[dict[str, Any]]] = {}
        self._leases: dict[str, int] = {}  # job id -> lease epoch this replica holds
        self._lost: set[str] = set()
        self._adopt: Callable[[JobRecord], None] | None = None
        self._heartbeat: threading.Thread | None = None
        self._closed = threading.Event()

    def _key(self, job_id: str, name: str) -> str:
        if not job_id:
            raise InvalidArgument(f"job_id is required: give the id of a {self.kind} job")
        if not is_id(job_id):
            raise NotFound(f"no {self.kind} job {echo(job_id)}: list jobs to see the known ids")
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
            self._acquire(record.id)  # a fresh id: nobody else can hold its lease
            self._save(record, [])
            self._append_event(record, "queued")
            observe_job_state(self.kind, record.id, record.state.value, False)
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
        """The job's raw events. Cached while this replica holds the job's lease (it is their only writer
        then, and watchers poll them on every change); read from the store when another replica owns it."""
        with self._lock:
            if job_id in self._leases and job_id in self._event_cache:
                return self._event_cache[job_id]
            key = self._key(job_id, "events.json")
            if not self.store.exists(key):
                self.get(job_id)
                return []
            events = self.store.read_json(key)
            if job_id in self._leases:
                self._event_cache[job_id] = events
            return events

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
            self._check_still_owner(job_id)
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
            if state is not None:
                observe_job_state(self.kind, job_id, state.value, state.terminal)
            if record.state.terminal and job_id not in self._threads:
                self._release(job_id)  # ended outside a job thread (whose own end releases it)
            return record

    def request_cancel(self, job_id: str) -> JobRecord:
        with self._lock:
            record = self.get(job_id)
            if record.state.terminal:
                raise FailedPrecondition(f"job {job_id} already ended ({record.state.value}); nothing to cancel")
            record.cancel_requested = True
            self._save(record)
            # Not started anywhere (no live lease elsewhere): end it here; else its owner sees the flag.
            if record.state == JobState.QUEUED and job_id not in self._threads and self._acquire(job_id):
                self.update(job_id, state=JobState.CANCELLED, message="cancelled before it started")
                self._release(job_id)
                return self.get(job_id)
            self._changed.notify_all()
            return record

    def reopen(self, job_id: str, message: str) -> JobRecord:
        """Queue an ended job again (e.g. to resume a failed or cancelled run from its checkpoint)."""
        with self._lock:
            record = self.get(job_id)
            if not record.state.terminal or job_id in self._threads:
                raise FailedPrecondition(f"job {job_id} is still {record.state.value.lower()}; only ended jobs can be resumed")
            if not self._acquire(job_id):
                raise FailedPrecondition(f"job {job_id} is being resumed by another replica; watch it instead")
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

    def stop_adopting(self) -> None:
        """A replica shutting down takes over no more jobs, not even the ones it hands over itself."""
        self._closed.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask every job running in this process to stop and wait for them (a server shutting down): a job
        must not outlive the channels it calls other services through."""
        self.stop_adopting()
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

    def recover_interrupted(self, hint: str, resume: Callable[[JobRecord], None] | None = None) -> list[str]:
        """Take over the jobs left QUEUED/RUNNING by a replica that stopped (no lease, or an expired one): now,
        and from then on at every heartbeat. `resume` continues such a job (it calls `requeue` and `start`);
        without it, or when it fails, the job is marked FAILED with the reason and `hint` on how to go on."""

        def adopt(record: JobRecord) -> None:
            was = record.state.value.lower()
            advice = hint
            if resume is not None:
                try:
                    resume(record)
                    return
                except Exception as error:  # the reason goes into the record, below
                    log.warning("%s job %s could not be resumed", self.kind, record.id, exc_info=True)
                    advice = f"resuming it failed ({getattr(error, 'message', None) or error}); {hint}"
            self.update(
                record.id,
                state=JobState.FAILED,
                message="interrupted: the replica running it stopped",
                error=f"the replica that ran this job stopped (crash or restart) while it was {was}; {advice}",
            )
            self._release(record.id)

        self._adopt = adopt
        adopted = self._adopt_orphans()
        self._start_heartbeat()
        return adopted

    def requeue(self, job_id: str, message: str) -> JobRecord:
        """Queue again a job this replica has just taken over (before `start`)."""
        return self.update(job_id, state=JobState.QUEUED, message=message, error="")

    def hand_over(self, job_id: str, message: str) -> JobRecord:
        """Leave a job this replica stops driving (a rolling update) to whichever replica takes it first:
        queued again, its lease released at once instead of expiring."""
        if not self._acquire(job_id):  # its thread released it on ending; another replica may hold it now
            return self.get(job_id)
        record = self.update(job_id, state=JobState.QUEUED, message=message, error="")
        self._release(job_id)
        return record

    # -- leases -------------------------------------------------------------------------------------------

    def current_lease(self, job_id: str) -> Lease | None:
        epochs = [int(m.group(1)) for name in self.store.list(f"jobs/{self.kind}/{job_id}") if (m := _LEASE.match(name))]
        if not epochs:
            return None
        data = self.store.read_json(self._lease_key(job_id, max(epochs)))
        return Lease(max(epochs), data["owner"], float(data["expires_at"]))

    def owns(self, job_id: str) -> bool:
        return job_id in self._leases

    def _lease_key(self, job_id: str, epoch: int) -> str:
        return self._key(job_id, f"lease-{epoch:06d}.json")

    def _lease_body(self, epoch: int, expires_at: float | None = None) -> bytes:
        expires = time.time() + self.lease_seconds if expires_at is None else expires_at
        return json.dumps({"owner": self.owner, "epoch": epoch, "expires_at": expires}).encode()

    def _acquire(self, job_id: str) -> bool:
        """Own the job: true if this replica holds its lease already or just took a free or expired one."""
        with self._lock:
            if job_id in self._leases:
                return True
            current = self.current_lease(job_id)
            if current is not None and current.owner != self.owner and current.expires_at > time.time():
                return False
            epoch = (current.epoch if current else 0) + 1
            # Of replicas racing for an expired lease, exactly one creates the next epoch's file.
            if not self.store.create_exclusive(self._lease_key(job_id, epoch), self._lease_body(epoch)):
                return False
            self._leases[job_id] = epoch
            self._lost.discard(job_id)
            self._event_cache.pop(job_id, None)  # another replica may have written events meanwhile
        self._start_heartbeat()
        return True

    def _check_still_owner(self, job_id: str) -> None:
        """Before each write of an owned job: a newer lease epoch means another replica took it over."""
        epoch = self._leases.get(job_id)
        if epoch is not None and (current := self.current_lease(job_id)) is not None and current.epoch != epoch:
            self._leases.pop(job_id, None)
            self._lost.add(job_id)
        if job_id in self._lost:
            raise LeaseLost(f"{self.kind} job {job_id} is owned by another replica now")

    def _release(self, job_id: str) -> None:
        with self._lock:
            epoch = self._leases.pop(job_id, None)
            if epoch is not None:
                self._lost.add(job_id)  # a late write of this replica must not follow the next owner's
            if epoch is not None and (current := self.current_lease(job_id)) and current.epoch == epoch:
                self.store.write_bytes(self._lease_key(job_id, epoch), self._lease_body(epoch, expires_at=0.0))

    def _renew(self) -> None:
        with self._lock:
            held = dict(self._leases)
        for job_id, epoch in held.items():
            current = self.current_lease(job_id)
            with self._lock:
                if self._leases.get(job_id) != epoch:
                    continue  # released meanwhile
                if current is None or current.epoch != epoch:
                    # Our heartbeat stalled past the expiry and another replica took the job over.
                    self._leases.pop(job_id, None)
                    self._lost.add(job_id)
                    log.warning("%s job %s was taken over by %s", self.kind, job_id, current.owner if current else "?")
                    continue
                self.store.write_bytes(self._lease_key(job_id, epoch), self._lease_body(epoch))

    def _adopt_orphans(self) -> list[str]:
        adopted = []
        for record in self.list():
            if self._closed.is_set():
                break
            if record.state.terminal or record.id in self._leases or self._adopt is None:
                continue
            if not self._acquire(record.id):
                continue
            record = self.get(record.id)  # read again under the lease: another replica may have ended it
            if record.state.terminal:
                self._release(record.id)
                continue
            log.warning("%s job %s was left %s by a stopped replica; taking it over", self.kind, record.id, record.state.value)
            self._adopt(record)
            adopted.append(record.id)
        return adopted

    def _start_heartbeat(self) -> None:
        with self._lock:
            if self._heartbeat is not None or self._closed.is_set():
                return
            self._heartbeat = threading.Thread(target=self._beat, name=f"jobs-{self.kind}-heartbeat", daemon=True)
        self._heartbeat.start()

    def _beat(self) -> None:
        # Three beats per lease period: one late beat does not lose a lease.
        while not self._closed.wait(self.lease_seconds / 3):
            try:
                self._renew()
                self._adopt_orphans()
            except Exception:  # a store hiccup must not end the heartbeat; the next beat retries
                log.exception("job lease heartbeat of %s failed", self.kind)

    def _run(self, job_id: str, work: Callable[[JobReporter], str]) -> None:
        try:
            self._run_owned(job_id, work)
        except LeaseLost:
            log.warning("%s job %s: another replica owns it now; this one stops writing to it", self.kind, job_id)
        finally:
            with self._lock:
                self._threads.pop(job_id, None)
            self._release(job_id)

    def _run_owned(self, job_id: str, work: Callable[[JobReporter], str]) -> None:
        reporter = JobReporter(self, job_id)
        try:
            if reporter.cancel_requested:
                raise Cancelled("cancelled before it started")
            self.update(job_id, state=JobState.RUNNING, message="running")
            result = work(reporter)
            self.update(job_id, state=JobState.SUCCEEDED, message="done", progress=1.0, result=result or "")
        except LeaseLost:
            raise
        except Cancelled as error:
            self.update(job_id, state=JobState.CANCELLED, message=error.message)
        except TutorforgeError as error:
            log.warning("job %s failed: %s", job_id, error.message)
            self.update(job_id, state=JobState.FAILED, message="failed", error=error.message)
        except Exception as error:  # a job must always end with a recorded state
            log.exception("job %s crashed", job_id)
            self.update(job_id, state=JobState.FAILED, message="failed", error=f"{type(error).__name__}: {error}")

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


def _page_key(record: JobRecord) -> str:
    """Newest first, ties broken by id: the key ListJobs pages by (its next_page_token is the last one)."""
    return f"{newest_first(record.created_at)}.{record.id}"


class JobDirectory:
    """The jobs of one service, whatever their kind: find, list (keyset-paged), watch and cancel. The job
    RPCs of every job-running service are served from one (core/job_api.py)."""

    def __init__(self, *managers: JobManager):
        self.managers = {manager.kind: manager for manager in managers}

    def manager(self, job_id: str) -> JobManager:
        kinds = " or ".join(self.managers)
        if not job_id:
            raise InvalidArgument(f"job_id is required: give the id of a {kinds} job")
        # Job ids start with their kind ("data-…", "trai-…", "opti-…", "eval-…"); any other id is looked
        # up (and refused as not found) by the first kind.
        first = next(iter(self.managers.values()))
        return next((m for m in self.managers.values() if job_id.startswith(m.kind[:4] + "-")), first)

    def get(self, job_id: str) -> JobRecord:
        return self.manager(job_id).get(job_id)

    def list(
        self, kind: str = "", state: JobState | None = None, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[JobRecord], str]:
        if kind and kind not in self.managers:
            raise InvalidArgument(f"kind {echo(kind)} is not a job kind here: use {', '.join(map(repr, self.managers))} or empty for all")
        managers = [self.managers[kind]] if kind else self.managers.values()
        records = sorted((r for m in managers for r in m.list(state)), key=_page_key)
        return keyset_page(records, _page_key, page_size, page_token, token_pattern=_PAGE_TOKEN)

    def watch(
        self, job_id: str, after_sequence: int = 0, is_active: Callable[[], bool] = lambda: True
    ) -> Iterator[JobEvent]:
        manager = self.manager(job_id)
        manager.get(job_id)  # NotFound for an unknown id, before any event is awaited
        return manager.watch(job_id, after_sequence, is_active)

    def cancel(self, job_id: str) -> JobRecord:
        return self.manager(job_id).request_cancel(job_id)
