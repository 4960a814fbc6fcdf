"""A run's metric curves on the driver side: the workers' per-step metrics followed into the job's events,
Prometheus, TensorBoard and, when the run ends, a loss-curve PNG under the run's folder in the store."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from tutorforge.artifacts.store import ArtifactStore
from tutorforge.core.jobs import JobReporter
from tutorforge.core.telemetry.metrics import observe_training_step
from tutorforge.training.loop import RunFiles

# The loss-curve PNG's name in a run's folder (experiment trackers keep it under the same name).
LOSS_CURVE_FILE = "loss_curve.png"


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
            self.store.write_bytes(f"{self.key}/{LOSS_CURVE_FILE}", loss_curve_png(self.history))


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
