"""The training service over real gRPC, for everything that fails fast or needs no Ray run: validation
errors name the field, unknown names are NOT_FOUND, GPU-only options are FAILED_PRECONDITION, nothing is
stored for a refused request, and job records outlive the process that ran them."""

from __future__ import annotations

import time

import grpc
import pytest

from tutorforge.artifacts.store import ArtifactStore
from tutorforge.core.jobs import JobManager, JobState
from tutorforge.training.config import TrainingSpec
from tutorforge.v1 import common_pb2, jobs_pb2, training_pb2, training_pb2_grpc

RECORDS = [
    {
        "id": f"r{i}",
        "conversations": [
            {"role": "user", "content": f"Why is the sky blue? ({i})"},
            {"role": "assistant", "content": "What happens to sunlight when it enters the air?"},
        ],
        "metadata": {"subject": "physics"},
    }
    for i in range(6)
]


@pytest.fixture
def training(serve, save_dataset):
    running, channel = serve("training")
    save_dataset(running.runtime.store, "sky", RECORDS[:4], RECORDS[4:])
    return running, training_pb2_grpc.TrainingServiceStub(channel)


def start(stub, **fields) -> grpc.RpcError:
    request = training_pb2.StartTrainingRequest(dataset="sky", adapter_name="sky-tutor")
    for path, value in fields.items():
        target = request
        *parents, leaf = path.split("__")
        for part in parents:
            target = getattr(target, part)
        if isinstance(value, list):
            getattr(target, leaf).extend(value)
        else:
            setattr(target, leaf, value)
    with pytest.raises(grpc.RpcError) as caught:
        stub.StartTraining(request)
    return caught.value


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"lora__rank": -4}, "lora.rank"),
        ({"lora__alpha": -1.0}, "lora.alpha"),
        ({"lora__dropout": 1.5}, "lora.dropout"),
        ({"lora__bias": "some"}, "lora.bias"),
        ({"lora__target_modules": ["not_a_layer"]}, "lora.target_modules"),
        ({"arguments__learning_rate": -2e-4}, "arguments.learning_rate"),
        ({"arguments__epochs": -1.0}, "arguments.epochs"),
        ({"arguments__batch_size": -4}, "arguments.batch_size"),
        ({"arguments__gradient_accumulation_steps": -1}, "arguments.gradient_accumulation_steps"),
        ({"arguments__lr_scheduler": "wavy"}, "arguments.lr_scheduler"),
        ({"arguments__max_seq_length": 8}, "arguments.max_seq_length"),
        ({"arguments__warmup_ratio": 1.0}, "arguments.warmup_ratio"),
        ({"arguments__max_steps": -3}, "arguments.max_steps"),
        ({"arguments__eval_steps": -1}, "arguments.eval_steps"),
        ({"arguments__early_stopping_patience": -2}, "arguments.early_stopping_patience"),
        ({"arguments__early_stopping_min_delta": -0.5}, "arguments.early_stopping_min_delta"),
        ({"arguments__early_stopping_min_delta": float("nan")}, "arguments.early_stopping_min_delta"),
        ({"arguments__learning_rate": 3.0}, "arguments.learning_rate"),
        ({"resources__num_workers": -1}, "resources.num_workers"),
        ({"adapter_name": "../escape"}, "adapter_name"),
        ({"resources__num_workers": 64}, "resources.num_workers"),
    ],
)
def test_bad_hyperparameters_are_invalid_argument_naming_the_field(training, fields, named) -> None:
    running, stub = training
    error = start(stub, **fields)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert named in error.details()
    # A refused request leaves no job behind.
    assert list(stub.ListJobs(jobs_pb2.ListJobsRequest()).jobs) == []


def test_unknown_dataset_is_not_found(training) -> None:
    _, stub = training
    error = start(stub, dataset="no-such-dataset")
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "no-such-dataset" in error.details()
    error = start(stub, dataset_version="abcdef123456")
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_gpu_options_without_a_gpu_are_failed_precondition(training) -> None:
    _, stub = training
    for option in ("use_unsloth", "load_in_4bit"):
        error = start(stub, **{option: True})
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert option in error.details() and "GPU" in error.details()


def test_unknown_jobs_are_not_found(training) -> None:
    _, stub = training
    calls = [
        lambda: stub.GetJob(jobs_pb2.GetJobRequest(job_id="trai-000000000000")),
        lambda: stub.CancelJob(jobs_pb2.CancelJobRequest(job_id="trai-000000000000")),
        lambda: stub.ResumeJob(jobs_pb2.ResumeJobRequest(job_id="trai-000000000000")),
        lambda: list(stub.WatchJob(jobs_pb2.WatchJobRequest(job_id="../../etc"))),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_run_left_running_by_a_dead_process_is_failed_with_a_resume_hint(serve, tmp_path) -> None:
    """What a crashed service leaves in the store: a RUNNING record with its history and a lease nobody
    renews. The next service takes the job over; resuming it fails here (its dataset does not exist), so it
    marks it FAILED (interrupted), keeps the history, and says why and how to resume."""
    store = ArtifactStore(str(tmp_path / "store"))
    jobs = JobManager(store, "training", lease_seconds=0.2)
    spec = TrainingSpec(dataset="sky", adapter_name="sky-tutor")
    record = jobs.create(labels={"dataset": "sky"}, parameters=spec.to_json())
    jobs.update(record.id, state=JobState.RUNNING, message="running")
    jobs.update(record.id, message="step 3/10 loss 2.1", step=3, total_steps=10, metrics={"loss": 2.1})
    before = jobs.events(record.id)
    jobs.stop()  # the process "dies": its lease expires
    time.sleep(0.5)

    _, channel = serve("training")
    stub = training_pb2_grpc.TrainingServiceStub(channel)
    job = stub.GetJob(jobs_pb2.GetJobRequest(job_id=record.id)).job
    assert job.state == common_pb2.JOB_STATE_FAILED
    assert "stopped (crash or restart)" in job.error and "jobs resume" in job.error
    assert "resuming it failed" in job.error and "sky" in job.error
    assert job.metrics["loss"] == pytest.approx(2.1)
    events = [r.event for r in stub.WatchJob(jobs_pb2.WatchJobRequest(job_id=record.id))]
    assert [e.sequence for e in events] == list(range(1, len(before) + 2))
    assert events[len(before) - 1].step == 3 and events[-1].state == common_pb2.JOB_STATE_FAILED
    listed = stub.ListJobs(jobs_pb2.ListJobsRequest(state=common_pb2.JOB_STATE_FAILED)).jobs
    assert [j.id for j in listed] == [record.id]
    assert list(stub.ListJobs(jobs_pb2.ListJobsRequest(state=common_pb2.JOB_STATE_RUNNING)).jobs) == []
