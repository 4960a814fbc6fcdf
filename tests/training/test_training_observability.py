"""A real (tiny) training run on Ray, tracked: its MLflow run is read back with MLflow's client (parameters,
per-step metrics, the loss curve and the adapter record as artifacts), the run's link is in the job's
labels and the adapter's lineage, and the training service's /metrics shows the steps."""

from __future__ import annotations

import socket
import urllib.request

import prometheus_client
import pytest
from mlflow import MlflowClient
from prometheus_client.parser import text_string_to_metric_families

from tutorforge.artifacts.adapters import AdapterRegistry
from tutorforge.core.telemetry.experiments import tracking_uri
from tutorforge.v1 import common_pb2, jobs_pb2, training_pb2, training_pb2_grpc

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_training_run_is_tracked_in_mlflow_and_linked_from_the_adapter(serve, starter_dataset) -> None:
    metrics_port = _free_port()
    running, channel = serve("training", server__metrics_port=metrics_port)
    store = running.runtime.store
    starter_dataset(store, train=8, validation=2)
    stub = training_pb2_grpc.TrainingServiceStub(channel)
    # The counters are per process: other tests in this session may have finished training jobs already.
    done_before = prometheus_client.REGISTRY.get_sample_value(
        "tutorforge_jobs_finished_total", {"kind": "training", "state": "SUCCEEDED"}
    ) or 0
    job = stub.StartTraining(
        training_pb2.StartTrainingRequest(
            dataset="starter",
            adapter_name="tracked",
            arguments=training_pb2.TrainingArguments(
                max_steps=2, batch_size=2, gradient_accumulation_steps=1, max_seq_length=128, learning_rate=1e-3,
                eval_steps=0,
            ),
            resources=training_pb2.ResourceConfig(num_workers=1),
        )
    ).job
    for _ in stub.WatchJob(jobs_pb2.WatchJobRequest(job_id=job.id)):
        pass
    job = stub.GetJob(jobs_pb2.GetJobRequest(job_id=job.id)).job
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job.error

    uri = tracking_uri(running.runtime.settings, store)
    assert job.labels["mlflow_tracking_uri"] == uri
    run_id = job.labels["mlflow_run"].removeprefix("runs:/")
    adapter = AdapterRegistry(store).get("tracked")
    assert adapter.lineage["experiment"] == {"mlflow_run": job.labels["mlflow_run"], "mlflow_tracking_uri": uri}

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["tutorforge.job_id"] == job.id
    assert run.data.params["args.max_steps"] == "2" and run.data.params["dataset"] == "starter"
    losses = {m.step: m.value for m in client.get_metric_history(run_id, "loss")}
    assert sorted(losses) == [1, 2] and all(value > 0 for value in losses.values())
    assert losses[2] == pytest.approx(job.metrics["loss"])
    assert {m.step for m in client.get_metric_history(run_id, "memory_bytes")} == {1, 2}
    assert {a.path for a in client.list_artifacts(run_id)} == {"loss_curve.png", "adapter.json"}

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
        scraped = [s for family in text_string_to_metric_families(response.read().decode()) for s in family.samples]
    samples = {sample.name: sample.value for sample in scraped if not sample.labels}
    finished = [s for s in scraped if s.name == "tutorforge_jobs_finished_total" and s.labels == {"kind": "training", "state": "SUCCEEDED"}]
    assert finished and finished[0].value == done_before + 1
    assert samples["tutorforge_training_steps_total"] >= 2
    assert samples["tutorforge_training_loss"] == pytest.approx(losses[2])
    assert samples["tutorforge_training_memory_bytes"] > 100e6
    assert samples["tutorforge_training_step_duration_seconds_count"] >= 2
