"""Domain ⇄ proto conversions shared by the services (jobs and their events, teaching programs)."""

from __future__ import annotations

import json

from google.protobuf.timestamp_pb2 import Timestamp

from tutorforge.artifacts.programs import Demonstration, LmSettings, TeachingProgram
from tutorforge.core.jobs import JobEvent, JobRecord, JobState
from tutorforge.v1 import common_pb2, inference_pb2

_STATES = {
    JobState.QUEUED: common_pb2.JOB_STATE_QUEUED,
    JobState.RUNNING: common_pb2.JOB_STATE_RUNNING,
    JobState.SUCCEEDED: common_pb2.JOB_STATE_SUCCEEDED,
    JobState.FAILED: common_pb2.JOB_STATE_FAILED,
    JobState.CANCELLED: common_pb2.JOB_STATE_CANCELLED,
}


def timestamp(seconds: float) -> Timestamp:
    value = Timestamp()
    value.FromNanoseconds(int(seconds * 1e9))
    return value


def job_state_to_proto(state: JobState) -> common_pb2.JobState:
    return _STATES[state]


def job_state_from_proto(state: common_pb2.JobState) -> JobState | None:
    """The domain state for a proto filter value; None for JOB_STATE_UNSPECIFIED (= any state)."""
    return next((domain for domain, value in _STATES.items() if value == state), None)


def job_to_proto(record: JobRecord) -> common_pb2.Job:
    return common_pb2.Job(
        id=record.id,
        kind=record.kind,
        state=_STATES[record.state],
        progress=record.progress,
        message=record.message,
        error=record.error,
        created_at=timestamp(record.created_at),
        updated_at=timestamp(record.updated_at),
        metrics=record.metrics,
        labels=record.labels,
        result=record.result,
        parameters_json=json.dumps(record.parameters, sort_keys=True),
    )


def event_to_proto(event: JobEvent) -> common_pb2.JobEvent:
    return common_pb2.JobEvent(
        job_id=event.job_id,
        sequence=event.sequence,
        time=timestamp(event.time),
        state=_STATES[event.state],
        progress=event.progress,
        message=event.message,
        metrics=event.metrics,
        step=event.step,
        total_steps=event.total_steps,
    )


def program_from_proto(program: inference_pb2.TeachingProgram) -> TeachingProgram:
    return TeachingProgram(
        instructions=program.instructions,
        demonstrations=tuple(Demonstration(d.query, d.response) for d in program.demonstrations),
        adapter=program.adapter,
        base_model=program.base_model,
        lm=LmSettings(max_tokens=program.max_tokens, frequency_penalty=program.frequency_penalty),
    )


def program_to_proto(program: TeachingProgram) -> inference_pb2.TeachingProgram:
    return inference_pb2.TeachingProgram(
        instructions=program.instructions,
        demonstrations=[inference_pb2.Demonstration(query=d.query, response=d.response) for d in program.demonstrations],
        adapter=program.adapter,
        base_model=program.base_model,
        max_tokens=program.lm.max_tokens,
        frequency_penalty=program.lm.frequency_penalty,
    )
