"""Publishing a finished run: its adapter (the best evaluated weights, with the tokenizer it was trained
with) registered with its lineage, optionally merged into the base model; and what an experiment tracker
keeps of the run."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tutorforge.artifacts.adapters import AdapterRegistry, AdapterVersion
from tutorforge.artifacts.store import ArtifactStore
from tutorforge.core.models import chat_model_name, load_chat_model, load_chat_tokenizer
from tutorforge.core.settings import Settings
from tutorforge.training.config import TrainingSpec
from tutorforge.training.curves import LOSS_CURVE_FILE
from tutorforge.training.loop import ADAPTER_WEIGHTS_FILE, BEST_DIR, run_key

if TYPE_CHECKING:
    from tutorforge.training.runner import PreparedRun


class AdapterPublisher:
    def __init__(self, settings: Settings, store: ArtifactStore):
        self.settings = settings
        self.store = store
        self.registry = AdapterRegistry(store)

    def publish(
        self, job_id: str, prepared: PreparedRun, checkpoint: Any, metrics: dict[str, float], experiment: dict[str, str]
    ) -> AdapterVersion:
        """The run's final checkpoint as the next version of its adapter in the registry."""
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
        curve = f"{run_key(job_id)}/{LOSS_CURVE_FILE}"
        artifacts = [(LOSS_CURVE_FILE, self.store.read_bytes(curve))] if self.store.exists(curve) else []
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

