"""The driver side of a training run: prepare the data, launch Ray Train, follow the workers' metrics into
the job's events (`curves.py`), then publish the adapter with its lineage (`publishing.py`).

Ray is joined or started by `ray_cluster.py`. `trainer.fit()` runs inside a Ray task, so cancelling that
task (as a last resort after a graceful stop) takes its controller and workers down with it, and the
driver process only has to follow files in the artifact store."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from tutorforge.artifacts.adapters import AdapterVersion
from tutorforge.artifacts.datasets import DatasetInfo, DatasetRepository
from tutorforge.artifacts.store import ArtifactStore
from tutorforge.core.errors import Cancelled, FailedPrecondition, InvalidArgument, TutorforgeError
from tutorforge.core.jobs import JobReporter
from tutorforge.core.models import chat_model_path, load_chat_tokenizer
from tutorforge.core.settings import Settings
from tutorforge.core.telemetry.experiments import lineage_of
from tutorforge.training.config import TrainingSpec
from tutorforge.training.curves import MetricsRecorder
from tutorforge.training.data import TokenizedSplit, padding_share, tokenize_records
from tutorforge.training.loop import RunFiles, StepPlan, plan_steps, run_batches, run_key, train_worker
from tutorforge.training.modeling import check_target_modules_of, choose_device
from tutorforge.training.publishing import AdapterPublisher
from tutorforge.training.ray_cluster import ensure_ray

log = logging.getLogger(__name__)

# Seconds a cancelled run gets to checkpoint and stop by itself before its Ray task is killed.
CANCEL_GRACE_SECONDS = 60.0
POLL_SECONDS = 1.0
RESUME_HINT = "`tutorforge jobs resume <job id>` (ResumeJob) continues it from its last checkpoint"


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
        self.publisher = AdapterPublisher(settings, store)
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
        adapter = self.publisher.publish(job_id, prepared, checkpoint, metrics, lineage_of(reporter.labels()))
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
