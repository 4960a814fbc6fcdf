"""Experiment tracking with the real MLflow (its SQLite store inside the artifact store) and W&B in offline
mode: a job's parameters, per-step metrics and artifacts are read back with MLflow's own client, the run's
links land in the job's labels, and the run ends with the job's outcome."""

from __future__ import annotations

import threading

from mlflow import MlflowClient

from tests.conftest import make_settings
from tests.tooling import missing_tool
from tutorforge.artifacts.store import ArtifactStore
from tutorforge.core.errors import Cancelled
from tutorforge.core.jobs import JobManager, JobState
from tutorforge.core.telemetry.experiments import lineage_of, tracked_job, tracking_uri

PARAMS = {"lora": {"r": 8, "target_modules": ["q_proj", "v_proj"]}, "args": {"learning_rate": 0.001}, "dataset": "starter"}


def _run_job(jobs: JobManager, settings, work) -> str:
    record = jobs.create(labels={"dataset": "starter"}, parameters=PARAMS)

    def tracked(reporter):
        with tracked_job(settings, jobs, reporter, PARAMS) as run_reporter:
            return work(run_reporter)

    jobs.start(record.id, tracked)
    jobs.wait(record.id, timeout=120)
    return record.id


def test_a_job_logs_params_metrics_and_artifacts_to_mlflow(tmp_path) -> None:
    settings = make_settings(tmp_path)
    store = ArtifactStore(settings.store_url)
    jobs = JobManager(store, "training")

    def work(reporter) -> str:
        for step, loss in enumerate((2.5, 1.75, 1.5), start=1):
            reporter.progress(f"step {step}", step=step, total_steps=3, metrics={"loss": loss, "tokens_per_second": 100.0 * step})
        reporter.run.log_artifact("notes.txt", b"three steps")
        return "socratic"

    job_id = _run_job(jobs, settings, work)
    record = jobs.get(job_id)
    assert record.state == JobState.SUCCEEDED, record.error
    # The run's link is in the job's labels, and is what an adapter's lineage keeps.
    uri = tracking_uri(settings, store)
    assert uri.startswith("sqlite:///") and str(store.local_path("mlflow")) in uri
    assert record.labels["mlflow_tracking_uri"] == uri
    assert lineage_of(record.labels) == {"mlflow_run": record.labels["mlflow_run"], "mlflow_tracking_uri": uri}
    run_id = record.labels["mlflow_run"].removeprefix("runs:/")

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "tutorforge-training"
    assert run.data.tags["tutorforge.job_id"] == job_id
    assert run.data.params["lora.r"] == "8"
    assert run.data.params["lora.target_modules"] == '["q_proj", "v_proj"]'
    assert run.data.params["args.learning_rate"] == "0.001" and run.data.params["dataset"] == "starter"
    history = client.get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(1, 2.5), (2, 1.75), (3, 1.5)]
    assert [a.path for a in client.list_artifacts(run_id)] == ["notes.txt"]
    # Artifacts live inside the artifact store too.
    assert run.info.artifact_uri.startswith(f"file://{store.local_path('mlflow/artifacts')}")


def test_cancelled_and_failed_jobs_end_their_runs_so_and_a_resume_continues_the_run(tmp_path) -> None:
    settings = make_settings(tmp_path)
    store = ArtifactStore(settings.store_url)
    jobs = JobManager(store, "optimization")
    started = threading.Event()

    def cancelled(reporter) -> str:
        reporter.progress("trial 1", step=1, total_steps=4, metrics={"best_score": 0.25})
        started.set()
        raise Cancelled("cancelled at trial 1")

    job_id = _run_job(jobs, settings, cancelled)
    assert jobs.get(job_id).state == JobState.CANCELLED
    link = jobs.get(job_id).labels["mlflow_run"]
    client = MlflowClient(tracking_uri=tracking_uri(settings, store))
    run_id = link.removeprefix("runs:/")
    assert client.get_run(run_id).info.status == "KILLED"

    # Resuming the job continues the same run: one series of metrics per job.
    jobs.reopen(job_id, "resuming")

    def resumed(reporter) -> str:
        reporter.progress("trial 2", step=2, total_steps=4, metrics={"best_score": 0.5})
        raise RuntimeError("the LM went away")

    def tracked(reporter):
        with tracked_job(settings, jobs, reporter, PARAMS) as run_reporter:
            return resumed(run_reporter)

    jobs.start(job_id, tracked)
    jobs.wait(job_id, timeout=120)
    assert jobs.get(job_id).state == JobState.FAILED
    assert jobs.get(job_id).labels["mlflow_run"] == link
    assert client.get_run(run_id).info.status == "FAILED"
    assert [m.value for m in sorted(client.get_metric_history(run_id, "best_score"), key=lambda m: m.step)] == [0.25, 0.5]


def test_an_unreachable_tracking_server_does_not_fail_the_job(tmp_path) -> None:
    settings = make_settings(tmp_path, experiments__tracking_uri="http://127.0.0.1:9")
    jobs = JobManager(ArtifactStore(settings.store_url), "training")

    def work(reporter) -> str:
        reporter.progress("step 1", step=1, total_steps=1, metrics={"loss": 1.0})
        return "done"

    job_id = _run_job(jobs, settings, work)
    record = jobs.get(job_id)
    assert record.state == JobState.SUCCEEDED and record.result == "done"
    assert "mlflow_run" not in record.labels


def test_wandb_offline_run_is_linked_from_the_job(tmp_path, monkeypatch) -> None:
    try:
        import wandb  # noqa: F401
    except ImportError:
        missing_tool("wandb is not installed (pip install 'tutorforge[wandb]'; the all extra has it)")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    settings = make_settings(tmp_path, experiments__wandb_project="tutorforge-test", experiments__mlflow=False)
    store = ArtifactStore(settings.store_url)
    jobs = JobManager(store, "training")

    def work(reporter) -> str:
        reporter.progress("step 1", step=1, total_steps=1, metrics={"loss": 1.25})
        reporter.run.log_artifact("notes.txt", b"one step")
        return "done"

    job_id = _run_job(jobs, settings, work)
    record = jobs.get(job_id)
    assert record.state == JobState.SUCCEEDED, record.error
    folder = record.labels["wandb_run"]
    assert folder.startswith(str(store.local_path("wandb")))
    # The offline run's files: what `wandb sync` uploads.
    run_files = list(store.local_path("wandb").rglob("*.wandb"))
    assert run_files and run_files[0].stat().st_size > 0
    assert "mlflow_run" not in record.labels
    saved = list(store.local_path("wandb").rglob("notes.txt"))
    assert saved and saved[0].read_bytes() == b"one step"
