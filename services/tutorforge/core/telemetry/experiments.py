"""Experiment tracking: each training and optimization run logs its parameters, per-step metrics and
artifacts to MLflow and, when configured, to Weights & Biases, so that runs can be compared.

MLflow by default keeps its runs inside a local artifact store: a SQLite database and an artifact folder
under `<store>/mlflow/` (MLflow's plain-folder backend is in maintenance mode and refuses to open unless
told to). With an object store (s3://, gs://) set `experiments.tracking_uri` to the cluster's tracking
server; without one, MLflow stays off. W&B logs when `experiments.wandb_project` is set; WANDB_MODE=offline
writes the run locally (`wandb sync` uploads it later).

The run's links go into the job's labels (`mlflow_run`, `mlflow_tracking_uri`, `wandb_run`) and from there
into the published adapter's lineage. Tracking never fails a run: a backend that errors is logged and
dropped. mlflow and wandb are imported only when a run starts."""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tutorforge.artifacts.store import ArtifactStore
from tutorforge.core.errors import Cancelled
from tutorforge.core.jobs import JobManager, JobReporter
from tutorforge.core.settings import Settings

log = logging.getLogger(__name__)

# Job label keys that hold a run's links; the adapter lineage keeps these.
LINK_LABELS = ("mlflow_run", "mlflow_tracking_uri", "wandb_run")
# MLflow refuses longer parameter values.
_MAX_PARAM_CHARS = 6000
_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def tracking_uri(settings: Settings, store: ArtifactStore) -> str:
    """Where MLflow runs go: the configured server, else SQLite inside a local store; "" = MLflow off."""
    config = settings.experiments
    if not config.mlflow:
        return ""
    if config.tracking_uri:
        return config.tracking_uri
    if not store.is_local:
        return ""
    return f"sqlite:///{store.local_path('mlflow')}/mlflow.db"


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested parameters as MLflow wants them: dotted keys, string values."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            flat[name] = text[:_MAX_PARAM_CHARS]
    return flat


def lineage_of(labels: Mapping[str, str]) -> dict[str, str]:
    """The run links among a job's labels (what an adapter's lineage records)."""
    return {key: labels[key] for key in LINK_LABELS if labels.get(key)}


class ExperimentRun:
    """One run in the configured trackers; with none configured every method does nothing."""

    def __init__(self) -> None:
        self.links: dict[str, str] = {}
        self._mlflow: Any = None
        self._mlflow_run = ""
        self._wandb: Any = None

    # ---- starting -----------------------------------------------------------------------------------

    def _start_mlflow(self, uri: str, store: ArtifactStore, experiment: str, name: str, tags: dict[str, str], resume: str) -> None:
        if uri.startswith(("http://", "https://")):
            _check_reachable(uri)
        client = _client(uri)
        found = client.get_experiment_by_name(experiment)
        if found is not None:
            experiment_id = found.experiment_id
        else:
            location = f"file://{store.local_path('mlflow/artifacts')}" if uri.startswith("sqlite:") else None
            try:
                experiment_id = client.create_experiment(experiment, artifact_location=location)
            except Exception:  # noqa: BLE001 - created meanwhile by another run
                experiment_id = client.get_experiment_by_name(experiment).experiment_id
        if resume:
            # A resumed job continues its run: one run per job, its metrics one series.
            client.update_run(resume, status="RUNNING")
            run_id = resume
        else:
            run_id = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
        self._mlflow, self._mlflow_run = client, run_id
        self.links["mlflow_tracking_uri"] = uri
        self.links["mlflow_run"] = (
            f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
            if uri.startswith(("http://", "https://"))
            else f"runs:/{run_id}"
        )

    def _start_wandb(self, settings: Settings, store: ArtifactStore, group: str, name: str, params: dict[str, Any]) -> None:
        import wandb

        config = settings.experiments
        folder = store.local_path("wandb") if store.is_local else Path(tempfile.mkdtemp(prefix="tutorforge-wandb-"))
        folder.mkdir(parents=True, exist_ok=True)
        self._wandb = wandb.init(
            project=config.wandb_project,
            entity=config.wandb_entity or None,
            group=group,
            name=name,
            config=params,
            dir=str(folder),
            reinit="create_new",
            settings=wandb.Settings(console="off", silent=True),
        )
        # Offline runs have no URL until `wandb sync`: their folder instead.
        self.links["wandb_run"] = self._wandb.url or str(self._wandb.dir)

    # ---- logging ------------------------------------------------------------------------------------

    def log_params(self, params: Mapping[str, Any]) -> None:
        flat = flatten(params)
        if self._mlflow is not None:
            self._guard("mlflow", lambda: _log_params(self._mlflow, self._mlflow_run, flat))

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        numbers = {key: float(value) for key, value in metrics.items()}
        if not numbers:
            return
        if self._mlflow is not None:
            self._guard("mlflow", lambda: _log_metrics(self._mlflow, self._mlflow_run, numbers, step))
        if self._wandb is not None:
            self._guard("wandb", lambda: self._wandb.log({**numbers, "trainer/step": step}))

    def log_artifact(self, name: str, data: bytes) -> None:
        if self._mlflow is not None:
            with tempfile.TemporaryDirectory(prefix="tutorforge-artifact-") as folder:
                path = Path(folder) / name
                path.write_bytes(data)
                self._guard("mlflow", lambda: self._mlflow.log_artifact(self._mlflow_run, str(path)))
        if self._wandb is not None:
            # W&B links saved files into its run folder rather than copying them: write them there.
            def save() -> None:
                path = Path(self._wandb.dir) / name
                path.write_bytes(data)
                self._wandb.save(str(path), base_path=self._wandb.dir, policy="now")

            self._guard("wandb", save)

    def finish(self, status: str) -> None:
        """`status`: FINISHED, FAILED or KILLED (MLflow's run states)."""
        if self._mlflow is not None:
            self._guard("mlflow", lambda: self._mlflow.set_terminated(self._mlflow_run, status=status))
        if self._wandb is not None:
            self._guard("wandb", lambda: self._wandb.finish(exit_code=0 if status == "FINISHED" else 1))

    def _guard(self, backend: str, call: Any) -> None:
        try:
            call()
        except Exception as error:  # noqa: BLE001 - tracking must never fail the run it tracks
            log.warning("experiment tracking: %s failed (%s); no more logging to it for this run", backend, error)
            if backend == "mlflow":
                self._mlflow = None
            else:
                self._wandb = None


def _check_reachable(uri: str) -> None:
    """MLflow's client retries an unreachable server for minutes: ask its /health once, briefly, first."""
    import urllib.request

    with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=3) as response:
        response.read()


def _client(uri: str) -> Any:
    with _clients_lock:
        if uri not in _clients:
            from mlflow import MlflowClient

            _clients[uri] = MlflowClient(tracking_uri=uri)
        return _clients[uri]


def _log_params(client: Any, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    existing = client.get_run(run_id).data.params
    # A resumed run already has its parameters; MLflow refuses to change a logged one.
    fresh = [Param(key, value) for key, value in params.items() if key not in existing]
    for start in range(0, len(fresh), 100):
        client.log_batch(run_id, params=fresh[start : start + 100])


def _log_metrics(client: Any, run_id: str, metrics: dict[str, float], step: int) -> None:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(key, value, now, step) for key, value in metrics.items()])


def start_run(
    settings: Settings,
    store: ArtifactStore,
    kind: str,
    job_id: str,
    params: Mapping[str, Any],
    tags: Mapping[str, str] | None = None,
    resume_mlflow_run: str = "",
) -> ExperimentRun:
    """Open the run of job `job_id` in experiment `tutorforge-<kind>` of every configured tracker."""
    run = ExperimentRun()
    name = f"{kind}-{job_id}"
    all_tags = {"tutorforge.job_id": job_id, "tutorforge.kind": kind, **(tags or {})}
    uri = tracking_uri(settings, store)
    if uri:
        try:
            run._start_mlflow(uri, store, f"tutorforge-{kind}", name, all_tags, resume_mlflow_run)
        except Exception as error:  # noqa: BLE001 - an unreachable tracker must not stop the job
            log.warning("experiment tracking: MLflow at %s is unavailable (%s); the run is not tracked there", uri, error)
    if settings.experiments.wandb_project:
        try:
            run._start_wandb(settings, store, kind, name, dict(params))
        except Exception as error:  # noqa: BLE001 - as above
            log.warning("experiment tracking: W&B is unavailable (%s); the run is not tracked there", error)
    run.log_params(params)
    return run


class TrackedReporter(JobReporter):
    """A job's reporter that also logs every reported metric to the job's experiment run."""

    def __init__(self, reporter: JobReporter, run: ExperimentRun):
        super().__init__(reporter._manager, reporter.job_id)
        self.run = run

    def progress(self, message: str = "", *, metrics: dict[str, float] | None = None, step: int = 0, **kwargs: Any) -> None:
        super().progress(message, metrics=metrics, step=step, **kwargs)
        if metrics:
            self.run.log_metrics(metrics, step)


@contextlib.contextmanager
def tracked_job(
    settings: Settings, jobs: JobManager, reporter: JobReporter, params: Mapping[str, Any]
) -> Iterator[TrackedReporter]:
    """Run a job's work in an experiment run: its links land in the job's labels before the work starts,
    and the run ends FINISHED, KILLED (cancelled) or FAILED with the work."""
    labels = jobs.get(reporter.job_id).labels
    resume = labels.get("mlflow_run", "").removeprefix("runs:/").rsplit("/", 1)[-1]
    same_tracker = labels.get("mlflow_tracking_uri") == tracking_uri(settings, jobs.store)
    run = start_run(settings, jobs.store, jobs.kind, reporter.job_id, params, resume_mlflow_run=resume if same_tracker else "")
    if run.links:
        jobs.update(reporter.job_id, labels=run.links)
    status = "FAILED"
    try:
        yield TrackedReporter(reporter, run)
        status = "FINISHED"
    except Cancelled:
        status = "KILLED"
        raise
    finally:
        run.finish(status)
