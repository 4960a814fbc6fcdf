"""The driver side of a training run: prepare the data, launch Ray Train, follow the workers' metrics into
the job's events, TensorBoard and a loss-curve PNG, then publish the adapter with its lineage.

Ray is reached with `ray.init()`: a local cluster when `settings.training.ray_address` is empty, else the
given address (`ray://head:10001` for a KubeRay RayCluster, or `auto`). `trainer.fit()` runs inside a
Ray task, so cancelling that task (as a last resort after a graceful stop) takes its controller and
workers down with it, and the driver process only has to follow files in the artifact store."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tutorforge.artifacts.adapters import AdapterRegistry, AdapterVersion
from tutorforge.artifacts.datasets import DatasetInfo, DatasetRepository
from tutorforge.artifacts.store import ArtifactStore
from tutorforge.core.errors import (
    Cancelled,
    FailedPrecondition,
    InvalidArgument,
    TutorforgeError,
    Unavailable,
)
from tutorforge.core.jobs import JobReporter
from tutorforge.core.models import chat_model_name, chat_model_path, load_chat_model, load_chat_tokenizer
from tutorforge.core.settings import Settings
from tutorforge.core.telemetry.experiments import lineage_of
from tutorforge.core.telemetry.metrics import observe_training_step
from tutorforge.training.config import TrainingSpec
from tutorforge.training.data import TokenizedSplit, padding_share, tokenize_records
from tutorforge.training.loop import (
    ADAPTER_WEIGHTS_FILE,
    BEST_DIR,
    RunFiles,
    StepPlan,
    plan_steps,
    run_batches,
    train_worker,
)
from tutorforge.training.modeling import check_target_modules_of, choose_device

log = logging.getLogger(__name__)

# Ray reads this once, when it is first imported (nothing imports it before this module): a head this
# process starts, and the driver, stay on 127.0.0.1. A KubeRay cluster is reached by its ray:// address.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

# Seconds a cancelled run gets to checkpoint and stop by itself before its Ray task is killed.
CANCEL_GRACE_SECONDS = 60.0
POLL_SECONDS = 1.0
RESUME_HINT = "`tutorforge jobs resume <job id>` (ResumeJob) continues it from its last checkpoint"
_WORKER_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "TUTORFORGE_HOME")

_ray_lock = threading.Lock()
# Set on shutdown: lets the thread that holds Ray (and the local head process) end.
_ray_released = threading.Event()
_local_head: list[subprocess.Popen] = []
HEAD_START_TIMEOUT_SECONDS = 180.0


def ensure_ray(settings: Settings) -> None:
    """Connect to Ray once per process: the configured cluster address, or a local head started for it.

    The local head is a `ray start --head --block` child process, not `ray.init()`'s built-in one:
    `ray.init()` forks Ray's processes with a Python `preexec_fn`, which is not safe in a process full of
    gRPC and torch threads (children crashed in fork handlers). The head runs under
    `setpriv --pdeathsig KILL`, bound to a thread that lives until `shutdown_ray()`, so it dies with the
    service even on SIGKILL (PR_SET_PDEATHSIG fires when the *thread* that started a child ends)."""
    import ray

    with _ray_lock:
        if ray.is_initialized():
            return
        address = settings.training.ray_address
        if address.startswith(("http://", "https://")):
            raise FailedPrecondition(
                f"training.ray_address={address!r} is a Ray Job Submission URL; the training service drives "
                "Ray Train as a client: use the head's client address ray://HEAD:10001"
            )
        # No token handshake with the cluster this process starts itself.
        if not address:
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
        started = threading.Event()
        failures: list[BaseException] = []

        def hold() -> None:
            try:
                target = address or _start_local_head()
                ray.init(
                    address=target,
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                    runtime_env={"env_vars": worker_env(settings)},
                )
            except BaseException as error:  # handed to the caller below
                failures.append(error)
            finally:
                started.set()
            if not failures:
                _ray_released.wait()

        _ray_released.clear()
        threading.Thread(target=hold, name="ray-driver", daemon=True).start()
        started.wait()
        if failures:
            _stop_local_head()
            raise Unavailable(
                f"cannot start or reach Ray ({address or 'local'}): {failures[0]}"
            ) from failures[0]


def _start_local_head() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "ray.scripts.scripts",
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--port={port}",
        "--include-dashboard=false",
        "--disable-usage-stats",
    ]
    if shutil.which("setpriv"):
        command = ["setpriv", "--pdeathsig", "KILL", *command]
    log_file = tempfile.NamedTemporaryFile(prefix="tutorforge-ray-head-", suffix=".log", delete=False)  # noqa: SIM115
    with log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    _local_head.append(process)
    deadline = time.monotonic() + HEAD_START_TIMEOUT_SECONDS
    log_path = Path(log_file.name)
    while time.monotonic() < deadline:
        output = log_path.read_text(errors="replace")
        if "Ray runtime started" in output:
            return f"127.0.0.1:{port}"
        if process.poll() is not None:
            raise RuntimeError(f"`ray start --head` exited with {process.returncode}: {output[-800:]}")
        time.sleep(0.5)
    raise RuntimeError(
        f"`ray start --head` was not up after {HEAD_START_TIMEOUT_SECONDS:.0f} s (log: {log_path})"
    )


def _stop_local_head() -> None:
    while _local_head:
        process = _local_head.pop()
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def shutdown_ray() -> None:
    import ray

    with _ray_lock:
        if ray.is_initialized():
            ray.shutdown()
        _stop_local_head()
        _ray_released.set()


def run_key(job_id: str) -> str:
    """Where a run's files live in the artifact store."""
    return f"training/runs/{job_id}"


def worker_env(settings: Settings) -> dict[str, str]:
    env = {name: os.environ[name] for name in _WORKER_ENV if name in os.environ}
    if settings.models.offline:
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["RAY_TRAIN_V2_ENABLED"] = "1"
    return env


@dataclass
class PreparedRun:
    """A validated spec with its dataset resolved and tokenised: everything `run` needs."""

    spec: TrainingSpec
    dataset: DatasetInfo
    train: TokenizedSplit
    validation: TokenizedSplit
    plan: StepPlan
    pad_token_id: int
    padding_share: float


class TrainingRunner:
    def __init__(self, settings: Settings, store: ArtifactStore):
        self.settings = settings
        self.store = store
        self.datasets = DatasetRepository(store)
        self.registry = AdapterRegistry(store)
        self._refs: dict[str, Any] = {}
        self._refs_lock = threading.Lock()
        self._stopping = False

    # -- preparation (synchronous, so bad requests fail the RPC itself) --------------------------------

    def prepare(self, spec: TrainingSpec) -> PreparedRun:
        spec.validate()
        if spec.use_unsloth or spec.load_in_4bit:
            self._check_gpu(spec)
        dataset = self.datasets.get(spec.dataset, spec.dataset_version)
        spec.dataset_version = dataset.version
        if spec.lora.target_modules:
            check_target_modules_of(chat_model_path(self.settings.models), spec.lora.target_modules)
        tokenizer = load_chat_tokenizer(self.settings.models)
        # The tokenizer is shared by the process: pick the pad id without modifying it.
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        args = spec.args
        train = tokenize_records(
            tokenizer, self.datasets.records(spec.dataset, dataset.version, "train"), args.max_seq_length
        )
        if not train.examples:
            raise InvalidArgument(
                f"dataset {spec.dataset}@{dataset.version} has no training record with an assistant turn "
                f"that fits arguments.max_seq_length={args.max_seq_length}"
            )
        validation = tokenize_records(
            tokenizer, self.datasets.records(spec.dataset, dataset.version, "validation"), args.max_seq_length
        )
        batches = run_batches(train.examples, args, pad_id, 0)
        plan = plan_steps(len(batches), spec.resources.num_workers, args)
        return PreparedRun(
            spec, dataset, train, validation, plan, pad_id, padding_share(batches)
        )

    def _check_gpu(self, spec: TrainingSpec) -> None:
        if self.settings.training.ray_address:
            # The workers are elsewhere: ask the cluster whether it has GPUs at all.
            ensure_ray(self.settings)
            import ray

            needed = spec.resources.gpus_per_worker * spec.resources.num_workers
            available = ray.cluster_resources().get("GPU", 0.0)
            if spec.resources.gpus_per_worker <= 0 or available < needed:
                raise FailedPrecondition(
                    f"use_unsloth/load_in_4bit need GPU workers: the cluster has {available:g} GPU(s), the "
                    f"request asks for {needed:g} (resources.gpus_per_worker × num_workers); "
                    "set gpus_per_worker >= 1"
                )
        else:
            choose_device(spec.use_unsloth, spec.load_in_4bit, spec.resources.gpus_per_worker)

    # -- running (in the job's thread) ------------------------------------------------------------------

    def run(self, job_id: str, prepared: PreparedRun, reporter: JobReporter) -> AdapterVersion:
        spec, plan = prepared.spec, prepared.plan
        files = RunFiles(self.store, run_key(job_id))
        files.clear_cancel()
        recorder = MetricsRecorder(self.store, run_key(job_id), already_seen=files.read_metrics())
        reporter.progress(
            f"starting {spec.resources.num_workers} Ray worker(s) for {plan.total_steps} steps",
            step=0,
            total_steps=plan.total_steps,
            metrics={
                "train_examples": len(prepared.train.examples),
                "validation_examples": len(prepared.validation.examples),
                "padding_share": prepared.padding_share,
                **{
                    f"{name}_records_{what}": float(count)
                    for name, split in (("train", prepared.train), ("validation", prepared.validation))
                    for what, count in (("dropped", split.dropped), *sorted(split.shortened.items()))
                },
            },
        )
        reporter.check_cancelled()
        try:
            checkpoint = self._fit(job_id, prepared, files, recorder, reporter)
            recorder.follow(files, reporter, plan.total_steps)
        finally:
            recorder.close()
        if files.cancel_requested or checkpoint is None:
            last = recorder.last_step
            raise Cancelled(
                f"cancelled at step {last} of {plan.total_steps}; the last checkpoint is kept: "
                f"`tutorforge jobs resume {job_id}` continues from it"
            )
        metrics = recorder.final_metrics()
        last = recorder.last_step
        outcome = (
            f"stopped early at step {last}: no validation improvement in "
            f"{spec.args.early_stopping_patience} evaluations"
            if metrics.get("stopped_early")
            else f"ran all {last} steps"
        )
        if "best_step" in metrics:
            outcome += (
                f"; publishing the best evaluated weights (step {metrics['best_step']:.0f}, "
                f"eval loss {metrics['best_eval_loss']:.4f})"
            )
        reporter.progress(outcome, step=last, total_steps=plan.total_steps)
        adapter = self._publish(job_id, prepared, checkpoint, metrics, lineage_of(reporter.labels()))
        reporter.progress(
            f"published adapter {adapter.name}@{adapter.version}",
            step=last,
            total_steps=plan.total_steps,
            metrics=metrics,
        )
        return adapter

    def ray_storage_path(self) -> str:
        configured = self.settings.training.storage_path
        if configured:
            return configured
        if self.store.is_local:
            return str(self.store.local_path("training/runs"))
        return f"{self.store.url.rstrip('/')}/training/runs"

    def _fit(
        self,
        job_id: str,
        prepared: PreparedRun,
        files: RunFiles,
        recorder: MetricsRecorder,
        reporter: JobReporter,
    ) -> Any:
        import ray

        ensure_ray(self.settings)
        chat_model_path(self.settings.models)  # convert the GGUF once here, not in every worker
        spec = prepared.spec
        config = {
            "spec": spec.to_json(),
            # Workers resolve the base model themselves (on a cluster they have their own model cache).
            "models": self.settings.models.model_dump(mode="json"),
            "store_url": self.store.url,
            "run_key": run_key(job_id),
            "train": [(e.input_ids, e.labels) for e in prepared.train.examples],
            "validation": [(e.input_ids, e.labels) for e in prepared.validation.examples],
            "pad_token_id": prepared.pad_token_id,
            "fault_step": self.settings.training.test_fault_step,
        }
        launch = ray.remote(num_cpus=0, max_retries=0)(fit_on_ray)
        ref = launch.remote(job_id, config, self.ray_storage_path(), self.settings.training.max_failures)
        with self._refs_lock:
            self._refs[job_id] = ref
        cancel_sent = 0.0
        try:
            while True:
                done, _ = ray.wait([ref], timeout=POLL_SECONDS)
                recorder.follow(files, reporter, prepared.plan.total_steps)
                if done:
                    break
                if reporter.cancel_requested and not cancel_sent:
                    files.request_cancel()
                    cancel_sent = time.monotonic()
                    reporter.progress("cancelling: the workers stop at the end of the current step")
                if cancel_sent and time.monotonic() - cancel_sent > CANCEL_GRACE_SECONDS:
                    ray.cancel(ref, force=True)
                    return None
            try:
                return ray.get(ref)
            except Exception as error:
                if self._stopping:
                    raise TutorforgeError(
                        f"the service stopped while this job was running; {RESUME_HINT}"
                    ) from None
                raise TutorforgeError(
                    f"training failed: {_root_cause(error)}. `tutorforge jobs resume {job_id}` continues "
                    "from the last checkpoint once the cause is fixed"
                ) from error
        finally:
            with self._refs_lock:
                self._refs.pop(job_id, None)

    def abort_all(self) -> list[str]:
        """Kill every run this process drives (service shutdown); their checkpoints stay for a resume."""
        import ray

        with self._refs_lock:
            self._stopping = True
            refs = dict(self._refs)
        for ref in refs.values():
            try:
                ray.cancel(ref, force=True)
            except Exception:  # already finished or Ray is gone: nothing left to stop
                log.debug("cancel of a finished run", exc_info=True)
        return list(refs)

    # -- publishing -------------------------------------------------------------------------------------

    def _publish(
        self, job_id: str, prepared: PreparedRun, checkpoint: Any, metrics: dict[str, float], experiment: dict[str, str]
    ) -> AdapterVersion:
        spec = prepared.spec
        with tempfile.TemporaryDirectory(prefix="tutorforge-adapter-") as folder:
            directory = Path(checkpoint.to_directory(str(Path(folder) / "checkpoint")))
            adapter_dir = Path(folder) / "adapter"
            adapter_dir.mkdir()
            shutil.copy(directory / "adapter_config.json", adapter_dir / "adapter_config.json")
            # The best evaluated weights when there was a validation split, else the last step's.
            best = directory / BEST_DIR / ADAPTER_WEIGHTS_FILE
            weights = best if best.exists() else directory / ADAPTER_WEIGHTS_FILE
            shutil.copy(weights, adapter_dir / ADAPTER_WEIGHTS_FILE)
            # The tokenizer (with its chat template) travels with the adapter: what it was trained with.
            load_chat_tokenizer(self.settings.models).save_pretrained(adapter_dir)
            base = chat_model_name(self.settings.models)
            training = training_outcome(spec, prepared, metrics)
            metadata = {
                **spec.metadata,
                "dataset": spec.dataset,
                "dataset_version": prepared.dataset.version,
                # Flat copies of the lineage's headline numbers, for listings and filters.
                **{f"training.{k}": _metadata_value(v) for k, v in training.items() if v is not None},
            }
            lineage = {
                "job_id": job_id,
                "base_model": base,
                "dataset": {
                    "name": spec.dataset,
                    "version": prepared.dataset.version,
                    "content_hash": prepared.dataset.content_hash,
                    "train_examples": len(prepared.train.examples),
                    "validation_examples": len(prepared.validation.examples),
                    "train_records_dropped": prepared.train.dropped,
                    "train_records_shortened": prepared.train.shortened,
                },
                "hyperparameters": {"lora": spec.to_json()["lora"], "arguments": spec.to_json()["args"]},
                "resources": spec.to_json()["resources"],
                "metrics": metrics,
                "training": training,
                "chat_template": "tokenizer files included (the base model's ChatML template)",
                "run": run_key(job_id),
                # The run in MLflow / W&B (core/telemetry/experiments.py), when tracked.
                "experiment": experiment,
            }
            adapter = self.registry.register(adapter_dir, spec.adapter_name, base, metadata, lineage)
            if spec.merge_and_export:
                self._export_merged(adapter, adapter_dir)
        return adapter

    def run_artifacts(self, job_id: str, adapter: AdapterVersion) -> list[tuple[str, bytes]]:
        """What an experiment tracker keeps of a finished run: its loss curve and the adapter's record."""
        curve = f"{run_key(job_id)}/loss_curve.png"
        artifacts = [("loss_curve.png", self.store.read_bytes(curve))] if self.store.exists(curve) else []
        record = {"name": adapter.name, "version": adapter.version, "base_model": adapter.base_model,
                  "metadata": adapter.metadata, "lineage": adapter.lineage}
        return [*artifacts, ("adapter.json", json.dumps(record, indent=2, default=str).encode())]

    def _export_merged(self, adapter: AdapterVersion, adapter_dir: Path) -> None:
        """Base + adapter merged into one safetensors model under `models/<name>/<version>/`."""
        import torch
        from peft import PeftModel

        base = load_chat_model(self.settings.models, dtype=torch.float32)
        merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
        with tempfile.TemporaryDirectory(prefix="tutorforge-merged-") as folder:
            merged.save_pretrained(folder, safe_serialization=True)
            load_chat_tokenizer(self.settings.models).save_pretrained(folder)
            self.store.upload_dir(Path(folder), f"models/{adapter.name}/{adapter.version}")


def training_outcome(spec: TrainingSpec, prepared: PreparedRun, metrics: dict[str, float]) -> dict[str, Any]:
    """What the run did, as recorded in the adapter's lineage: steps, losses, early stopping, and which
    step's weights were published."""
    best_step = int(metrics["best_step"]) if "best_step" in metrics else None
    steps = int(metrics.get("steps", 0))
    return {
        "steps": steps,
        "planned_steps": prepared.plan.total_steps,
        "train_loss": metrics.get("final_loss"),
        "eval_loss": metrics.get("eval_loss"),
        "best_eval_loss": metrics.get("best_eval_loss"),
        "best_step": best_step,
        "stopped_early": bool(metrics.get("stopped_early")),
        "early_stopping_patience": spec.args.early_stopping_patience,
        "published_step": best_step if best_step is not None else steps,
    }


def _metadata_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def fit_on_ray(job_id: str, config: dict[str, Any], storage_path: str, max_failures: int) -> Any:
    """Runs inside a Ray task: build the TorchTrainer and fit. Returns the final checkpoint."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    resources = config["spec"]["resources"]
    use_gpu = resources["gpus_per_worker"] > 0
    per_worker = {"CPU": resources["cpus_per_worker"]}
    if use_gpu:
        per_worker["GPU"] = resources["gpus_per_worker"]
    trainer = TorchTrainer(
        train_worker,
        train_loop_config=config,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=resources["num_workers"], use_gpu=use_gpu, resources_per_worker=per_worker
        ),
        run_config=RunConfig(
            name=job_id,
            storage_path=storage_path,
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    return trainer.fit().checkpoint


def _root_cause(error: BaseException) -> str:
    """The innermost useful message of a Ray error chain (worker tracebacks are long)."""
    cause: BaseException = error
    while True:
        inner = getattr(cause, "cause", None) or cause.__cause__
        if inner is None or inner is cause:
            break
        cause = inner
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"


class MetricsRecorder:
    """Forwards the workers' per-step metrics to the job, TensorBoard and (at the end) a loss-curve PNG."""

    def __init__(self, store: ArtifactStore, key: str, already_seen: list[dict[str, Any]]):
        self.store = store
        self.key = key
        self.history: list[dict[str, Any]] = list(already_seen)
        self.last_step = int(already_seen[-1]["step"]) if already_seen else 0
        # Records of an earlier attempt (before a resume) were forwarded by that attempt.
        self._forwarded_time = max((r.get("time", 0.0) for r in already_seen), default=0.0)
        self._local = store.is_local
        self._tb_dir = (
            store.local_path(f"{key}/tensorboard")
            if self._local
            else Path(tempfile.mkdtemp(prefix="tutorforge-tb-"))
        )
        self._writer: Any = None

    def follow(self, files: RunFiles, reporter: JobReporter, total_steps: int) -> None:
        history = files.read_metrics()
        for record in history:
            if record.get("time", 0.0) <= self._forwarded_time:
                continue
            self._forwarded_time = record["time"]
            if int(record["step"]) <= self.last_step:
                # A worker-group restart (FailureConfig) or an explicit resume went back to a checkpoint.
                reporter.progress(f"resumed from the last checkpoint: step {record['step']} runs again")
            self.last_step = int(record["step"])
            numbers = {
                k: float(v) for k, v in record.items() if k not in ("step", "total_steps", "time", "epoch")
            }
            numbers["epoch"] = float(record.get("epoch", 0.0))
            message = f"step {record['step']}/{total_steps} loss {record['loss']:.4f}"
            if "eval_loss" in record:
                message += f" eval_loss {record['eval_loss']:.4f}"
            reporter.progress(message, step=int(record["step"]), total_steps=total_steps, metrics=numbers)
            self._tensorboard(record)
            observe_training_step(record)
        self.history = history

    def _tensorboard(self, record: dict[str, Any]) -> None:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self._tb_dir))
        for name in ("loss", "eval_loss", "learning_rate", "grad_norm", "tokens_per_second"):
            if name in record:
                self._writer.add_scalar(
                    f"train/{name}" if name != "eval_loss" else "eval/loss", record[name], record["step"]
                )
        self._writer.flush()

    def final_metrics(self) -> dict[str, float]:
        if not self.history:
            return {}
        first, last = self.history[0], self.history[-1]
        metrics = {
            "final_loss": float(last["loss"]),
            "initial_loss": float(first["loss"]),
            "steps": float(last["step"]),
            "mean_tokens_per_second": sum(r["tokens_per_second"] for r in self.history) / len(self.history),
        }
        evals = [r for r in self.history if "eval_loss" in r]
        if evals:
            metrics["eval_loss"] = float(evals[-1]["eval_loss"])
            metrics["best_eval_loss"] = float(evals[-1]["best_eval_loss"])
            metrics["best_step"] = float(evals[-1]["best_step"])
        metrics["stopped_early"] = float(any(r.get("stopped_early") for r in self.history))
        return metrics

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            if not self._local:
                self.store.upload_dir(self._tb_dir, f"{self.key}/tensorboard")
                shutil.rmtree(self._tb_dir, ignore_errors=True)
        if self.history:
            self.store.write_bytes(f"{self.key}/loss_curve.png", loss_curve_png(self.history))


def loss_curve_png(history: list[dict[str, Any]]) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4), dpi=100)
    axes = figure.subplots()
    axes.plot([r["step"] for r in history], [r["loss"] for r in history], label="train loss", marker=".")
    evals = [(r["step"], r["eval_loss"]) for r in history if "eval_loss" in r]
    if evals:
        axes.plot(*zip(*evals), label="eval loss", marker="o")
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("loss (per assistant token)")
    axes.grid(alpha=0.3)
    axes.legend()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()
