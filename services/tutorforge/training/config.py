"""Hyperparameters of a training run: typed, defaulted to a recipe that teaches SmolLM2-135M the Socratic
style on CPU (docs/training.md, "The default recipe", says why each value), and validated, each error naming
the field to fix."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from tutorforge.core.errors import InvalidArgument
from tutorforge.core.names import validate_name

LR_SCHEDULERS = ("linear", "cosine", "constant")
LORA_BIASES = ("none", "all", "lora_only")
MAX_SEQ_LENGTH_LIMIT = 32768
# Validation passes cost ~1/3 of a training step per validation token: five keep that under ~15%.
EVALUATIONS_PER_RUN = 5


@dataclass
class LoraSpec:
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    # Empty = detected from the architecture (see `modeling.detect_target_modules`).
    target_modules: list[str] = field(default_factory=list)
    bias: str = "none"


@dataclass
class TrainArgs:
    # One pass: on 2 CPU cores an epoch of ~500 dialogues is the 30-minute budget; early stopping ends
    # sooner when the validation loss stops improving.
    epochs: float = 1.0
    # Per worker: 2 packed rows of 512 tokens, so a step is ~1k tokens per worker.
    batch_size: int = 2
    gradient_accumulation_steps: int = 1
    # 1e-3 moved SmolLM2-135M to the Socratic style in ~45 steps; 5e-4 for 8 steps changed nothing.
    learning_rate: float = 1e-3
    warmup_ratio: float = 0.1
    lr_scheduler: str = "cosine"
    weight_decay: float = 0.0
    # Holds a dialogue with a two-passage course excerpt; longer records are shortened keeping their
    # assistant turns (see `data.fit_conversation`).
    max_seq_length: int = 512
    seed: int = 42
    # Optimizer steps between validation evaluations; None = about EVALUATIONS_PER_RUN per run;
    # 0 = at the end only.
    eval_steps: int | None = None
    # Evaluations without an improvement of more than `early_stopping_min_delta` before the run stops;
    # 0 = never stop early. The published adapter is the best evaluated one either way.
    early_stopping_patience: int = 3
    early_stopping_min_delta: float = 0.0
    # Optimizer steps between checkpoints; 0 = at each epoch's end.
    checkpoint_steps: int = 0
    # 0 = run all epochs.
    max_steps: int = 0
    packing: bool = True
    group_by_length: bool = True
    max_grad_norm: float = 1.0

    def evaluation_interval(self, total_steps: int) -> int:
        """Steps between evaluations (0 = at the end only)."""
        if self.eval_steps is not None:
            return self.eval_steps
        return max(1, math.ceil(total_steps / EVALUATIONS_PER_RUN))


@dataclass
class Resources:
    num_workers: int = 2
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0


@dataclass
class TrainingSpec:
    """Everything a run needs, as stored in the job's parameters (so a resume can rebuild it)."""

    dataset: str
    adapter_name: str
    dataset_version: str = ""
    lora: LoraSpec = field(default_factory=LoraSpec)
    args: TrainArgs = field(default_factory=TrainArgs)
    resources: Resources = field(default_factory=Resources)
    metadata: dict[str, str] = field(default_factory=dict)
    use_unsloth: bool = False
    load_in_4bit: bool = False
    merge_and_export: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainingSpec:
        return cls(
            **{
                **data,
                "lora": LoraSpec(**data.get("lora", {})),
                "args": TrainArgs(**data.get("args", {})),
                "resources": Resources(**data.get("resources", {})),
            }
        )

    def validate(self) -> TrainingSpec:
        if not self.dataset:
            raise InvalidArgument("dataset is required: the name of a dataset built by the datasets service")
        validate_name(self.dataset, "dataset")
        validate_name(self.adapter_name, "adapter_name")
        lora, args, resources = self.lora, self.args, self.resources
        _check(1 <= lora.rank <= 1024, "lora.rank", lora.rank, "an integer in 1..1024 (16 is a good start)")
        _check(
            _finite(lora.alpha) and lora.alpha > 0,
            "lora.alpha",
            lora.alpha,
            "a positive number (often 2 × rank)",
        )
        _check(_finite(lora.dropout) and 0 <= lora.dropout < 1, "lora.dropout", lora.dropout, "in [0, 1)")
        _check(lora.bias in LORA_BIASES, "lora.bias", lora.bias, f"one of {', '.join(LORA_BIASES)}")
        for module in lora.target_modules:
            _check(
                module.replace("_", "").replace(".", "").isalnum(),
                "lora.target_modules",
                module,
                "module names such as q_proj or v_proj",
            )
        _check(
            _finite(args.epochs) and 0 < args.epochs <= 1000, "arguments.epochs", args.epochs, "in (0, 1000]"
        )
        _check(1 <= args.batch_size <= 4096, "arguments.batch_size", args.batch_size, "in 1..4096")
        _check(
            1 <= args.gradient_accumulation_steps <= 4096,
            "arguments.gradient_accumulation_steps",
            args.gradient_accumulation_steps,
            "in 1..4096",
        )
        _check(
            _finite(args.learning_rate) and 0 < args.learning_rate <= 1,
            "arguments.learning_rate",
            args.learning_rate,
            "in (0, 1] (1e-3 is the default for LoRA on a small model)",
        )
        _check(
            _finite(args.warmup_ratio) and 0 <= args.warmup_ratio < 1,
            "arguments.warmup_ratio",
            args.warmup_ratio,
            "in [0, 1)",
        )
        _check(
            args.lr_scheduler in LR_SCHEDULERS,
            "arguments.lr_scheduler",
            args.lr_scheduler,
            f"one of {', '.join(LR_SCHEDULERS)}",
        )
        _check(
            _finite(args.weight_decay) and 0 <= args.weight_decay <= 1,
            "arguments.weight_decay",
            args.weight_decay,
            "in [0, 1]",
        )
        _check(
            16 <= args.max_seq_length <= MAX_SEQ_LENGTH_LIMIT,
            "arguments.max_seq_length",
            args.max_seq_length,
            f"in 16..{MAX_SEQ_LENGTH_LIMIT}",
        )
        _check(0 <= args.seed < 2**32, "arguments.seed", args.seed, "in 0..2^32-1")
        _check(
            args.eval_steps is None or 0 <= args.eval_steps <= 1_000_000,
            "arguments.eval_steps",
            args.eval_steps,
            "unset (about 5 evaluations per run), 0 (end only) or a positive step count",
        )
        _check(
            0 <= args.early_stopping_patience <= 1000,
            "arguments.early_stopping_patience",
            args.early_stopping_patience,
            "0 (never stop early) or a number of evaluations in 1..1000",
        )
        _check(
            _finite(args.early_stopping_min_delta) and 0 <= args.early_stopping_min_delta <= 10,
            "arguments.early_stopping_min_delta",
            args.early_stopping_min_delta,
            "a loss difference in [0, 10]",
        )
        _check(
            args.checkpoint_steps >= 0,
            "arguments.checkpoint_steps",
            args.checkpoint_steps,
            "0 (each epoch) or a positive step count",
        )
        _check(
            args.max_steps >= 0,
            "arguments.max_steps",
            args.max_steps,
            "0 (all epochs) or a positive step count",
        )
        _check(
            _finite(args.max_grad_norm) and args.max_grad_norm > 0,
            "arguments.max_grad_norm",
            args.max_grad_norm,
            "a positive number",
        )
        _check(
            1 <= resources.num_workers <= 1024, "resources.num_workers", resources.num_workers, "in 1..1024"
        )
        _check(
            _finite(resources.cpus_per_worker) and resources.cpus_per_worker > 0,
            "resources.cpus_per_worker",
            resources.cpus_per_worker,
            "a positive number",
        )
        _check(
            _finite(resources.gpus_per_worker) and resources.gpus_per_worker >= 0,
            "resources.gpus_per_worker",
            resources.gpus_per_worker,
            "0 or more",
        )
        for key, value in self.metadata.items():
            _check(
                bool(key) and len(key) <= 64 and len(value) <= 256,
                "metadata",
                key,
                "keys of 1-64 characters with values up to 256",
            )
        return self


def _finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _check(ok: bool, name: str, value: object, expected: str) -> None:
    if not ok:
        raise InvalidArgument(f"{name}={value!r} is not valid: use {expected}")
