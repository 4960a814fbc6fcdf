"""The per-worker training loop that Ray Train runs on each of N workers (DDP over gloo on CPU, NCCL on GPU).

The driver and the workers share only the artifact store (a local folder or an fsspec URL every worker
can reach) and Ray Train's run storage; nothing else, so the same code runs on this machine and on a
KubeRay cluster. Per run, under `training/runs/<job id>/` in the store:
- `metrics.json`: rank 0 rewrites the step history after every optimizer step; the driver polls it;
- `cancel`: written by the driver; rank 0 sees it at the next step and all workers stop together;
- `fault-injected`: marker of the test-only fault hook (a worker exits once, at a given step).

Checkpoints (adapter weights, optimizer state, step) go through `ray.train.report`; after a worker
failure (`FailureConfig.max_failures`) or an explicit resume, `ray.train.get_checkpoint()` returns the
latest one and the loop continues from its step, replaying the same deterministic batch order."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tutorforge.artifacts.store import ArtifactStore
from tutorforge.core.errors import InvalidArgument
from tutorforge.training.config import TrainArgs, TrainingSpec
from tutorforge.training.data import Batch, Example, epoch_batches

TRAINER_STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
# Folder of a checkpoint with the adapter weights of the best evaluation so far (what gets published).
BEST_DIR = "best"


@dataclass
class StepPlan:
    """How many batches each worker gets per epoch and how many optimizer steps the run takes."""

    batches_per_worker: int
    steps_per_epoch: int
    total_steps: int


@dataclass
class EarlyStopping:
    """Follows the validation loss: the best evaluation so far, and how many evaluations in a row did not
    improve on the best by more than `min_delta`; `stopped` once that reaches `patience` (0 = never)."""

    patience: int
    min_delta: float
    best_step: int = 0
    best_eval_loss: float | None = None
    bad_evals: int = 0
    stopped: bool = False

    def update(self, step: int, eval_loss: float) -> bool:
        """Record an evaluation; True when it is the best so far (its weights are the ones to keep)."""
        first = self.best_eval_loss is None
        improved = first or eval_loss < self.best_eval_loss - self.min_delta
        best = first or eval_loss < self.best_eval_loss
        self.bad_evals = 0 if improved else self.bad_evals + 1
        if best:
            self.best_step, self.best_eval_loss = step, eval_loss
        self.stopped = self.patience > 0 and self.bad_evals >= self.patience
        return best

    def state(self) -> dict[str, Any]:
        return {
            "best_step": self.best_step,
            "best_eval_loss": self.best_eval_loss,
            "bad_evals": self.bad_evals,
            "stopped": self.stopped,
        }

    def restore(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)


def plan_steps(num_batches: int, num_workers: int, args: TrainArgs) -> StepPlan:
    batches_per_worker = num_batches // num_workers
    if batches_per_worker == 0:
        raise InvalidArgument(
            f"the training split yields {num_batches} batch(es) of {args.batch_size}, fewer than "
            f"resources.num_workers={num_workers}: use fewer workers, a smaller batch_size or more data"
        )
    steps_per_epoch = math.ceil(batches_per_worker / args.gradient_accumulation_steps)
    total = args.max_steps or max(1, math.ceil(args.epochs * steps_per_epoch))
    return StepPlan(batches_per_worker, steps_per_epoch, total)


def run_batches(examples: list[Example], args: TrainArgs, pad_token_id: int, epoch: int) -> list[Batch]:
    return epoch_batches(
        examples,
        batch_size=args.batch_size,
        max_seq_length=args.max_seq_length,
        pad_token_id=pad_token_id,
        packing=args.packing,
        group_lengths=args.group_by_length,
        seed=args.seed,
        epoch=epoch,
    )


def run_key(job_id: str) -> str:
    """Where a run's files live in the artifact store."""
    return f"training/runs/{job_id}"


class RunFiles:
    """The files a run's driver and workers exchange through the artifact store."""

    def __init__(self, store: ArtifactStore, run_key: str):
        self.store = store
        self.key = run_key

    def read_metrics(self) -> list[dict[str, Any]]:
        key = f"{self.key}/metrics.json"
        return self.store.read_json(key) if self.store.exists(key) else []

    def write_metrics(self, history: list[dict[str, Any]]) -> None:
        self.store.write_json(f"{self.key}/metrics.json", history)

    def request_cancel(self) -> None:
        self.store.write_text(f"{self.key}/cancel", str(time.time()))

    def clear_cancel(self) -> None:
        self.store.delete(f"{self.key}/cancel")

    @property
    def cancel_requested(self) -> bool:
        return self.store.exists(f"{self.key}/cancel")

    def take_fault(self) -> bool:
        """True exactly once per run: the test-only fault hook fires only the first time."""
        key = f"{self.key}/fault-injected"
        if self.store.exists(key):
            return False
        self.store.write_text(key, str(time.time()))
        return True


def _causal_lm(model: Any) -> Any:
    """The transformers causal LM inside a DDP and/or peft wrapper."""
    inner = getattr(model, "module", model)
    return inner.get_base_model() if hasattr(inner, "get_base_model") else inner


def peak_memory_bytes(device: str) -> float:
    """This worker's peak memory: allocated GPU memory on CUDA, the process's peak RSS otherwise."""
    if device == "cuda":
        import torch

        return float(torch.cuda.max_memory_allocated())
    import resource

    # ru_maxrss is in KiB on Linux.
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def token_loss_sum(model: Any, batch: Batch, device: str, autocast_dtype: Any = None) -> Any:
    """Summed cross-entropy over the labelled tokens of a batch (labels shifted by one).

    The output layer runs only on the positions that predict a label: with assistant-only labels that
    is about half of them, and the full batch × length × 49k-vocabulary logits (hundreds of MB per step
    in float32) are never built. The forward still goes through the (DDP) wrapper, with one logit kept,
    so gradient synchronisation is unchanged; the decoder's hidden states are taken with a hook. Models
    that post-process logits (soft-capping, scaling) take the full-logits path."""
    import torch
    import torch.nn.functional as F

    inputs = batch.tensors(device)
    labels = inputs.pop("labels")
    targets = labels[:, 1:]
    autocast = (
        torch.autocast(torch.device(device).type, dtype=autocast_dtype)
        if autocast_dtype
        else contextlib.nullcontext()
    )
    causal_lm = _causal_lm(model)
    config = causal_lm.config
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        with autocast:
            logits = model(**inputs, use_cache=False).logits[:, :-1]
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(),
            targets.reshape(-1),
            ignore_index=-100,
            reduction="sum",
        )
    captured: list[Any] = []
    hook = causal_lm.get_decoder().register_forward_hook(
        lambda module, args, output: captured.append(output[0])
    )
    try:
        with autocast:
            model(**inputs, use_cache=False, logits_to_keep=1)
            keep = targets != -100
            logits = causal_lm.get_output_embeddings()(captured[0][:, :-1][keep])
    finally:
        hook.remove()
    return F.cross_entropy(logits.float(), targets[keep], reduction="sum")


def evaluate_loss(
    model: Any, batches: list[Batch], device: str, autocast_dtype: Any = None
) -> tuple[float, int]:
    """(summed loss, labelled tokens) over `batches`, without gradients."""
    import torch

    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            total += float(token_loss_sum(model, batch, device, autocast_dtype))
            tokens += batch.label_tokens
    model.train(was_training)
    return total, tokens


def save_checkpoint(
    directory: Path, model: Any, optimizer: Any, state: dict[str, Any], best_weights: dict[str, Any] | None
) -> None:
    """Adapter weights and optimizer state as safetensors, the rest as JSON: nothing pickled. The best
    evaluated adapter weights go in `best/`, so a resumed run and the publish step both find them."""
    import torch
    from safetensors.torch import save_file

    model.save_pretrained(directory, safe_serialization=True)
    optimizer_state = optimizer.state_dict()
    tensors = {
        f"{index}.{name}": value.detach().cpu().contiguous()
        for index, entry in optimizer_state["state"].items()
        for name, value in entry.items()
        if torch.is_tensor(value)
    }
    save_file(tensors, str(directory / OPTIMIZER_FILE))
    if best_weights is not None:
        (directory / BEST_DIR).mkdir()
        save_file(best_weights, str(directory / BEST_DIR / ADAPTER_WEIGHTS_FILE))
    (directory / TRAINER_STATE_FILE).write_text(
        json.dumps({**state, "param_groups": optimizer_state["param_groups"]}, indent=2)
    )


def adapter_snapshot(model: Any) -> dict[str, Any]:
    """A CPU copy of the adapter's weights, keyed as in adapter_model.safetensors."""
    from peft import get_peft_model_state_dict

    return {
        name: value.detach().cpu().clone().contiguous()
        for name, value in get_peft_model_state_dict(model).items()
    }


def load_checkpoint(directory: Path, model: Any, optimizer: Any) -> dict[str, Any]:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = json.loads((directory / TRAINER_STATE_FILE).read_text())
    set_peft_model_state_dict(model, load_file(str(directory / ADAPTER_WEIGHTS_FILE)))
    per_param: dict[int, dict[str, Any]] = {}
    for key, value in load_file(str(directory / OPTIMIZER_FILE)).items():
        index, name = key.split(".", 1)
        per_param.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": per_param, "param_groups": state["param_groups"]})
    best = directory / BEST_DIR / ADAPTER_WEIGHTS_FILE
    state["best_weights"] = load_file(str(best)) if best.exists() else None
    return state


def _all_reduce(values: list[float]) -> list[float]:
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.tolist()


def train_worker(config: dict[str, Any]) -> None:
    """Ray Train's `train_loop_per_worker`; `config` holds the spec, the tokenised splits, where to write."""
    import ray.train
    import ray.train.torch
    import torch
    from transformers import get_scheduler

    from tutorforge.core.models import chat_model_path
    from tutorforge.core.settings import ModelSettings
    from tutorforge.training.modeling import choose_device, load_for_training

    spec = TrainingSpec.from_json(config["spec"])
    args = spec.args
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    files = RunFiles(ArtifactStore(config["store_url"]), config["run_key"])
    train_examples = [Example(*item) for item in config["train"]]
    validation_examples = [Example(*item) for item in config["validation"]]
    pad = config["pad_token_id"]
    plan = plan_steps(len(run_batches(train_examples, args, pad, 0)), world, args)

    device = choose_device(spec.use_unsloth, spec.load_in_4bit, spec.resources.gpus_per_worker)
    autocast_dtype = getattr(torch, device.dtype) if device.device == "cuda" else None
    torch_device = ray.train.torch.get_device()
    torch.manual_seed(args.seed)
    model_path = chat_model_path(ModelSettings(**config["models"]))
    model = load_for_training(model_path, spec.lora, device, args.max_seq_length, args.seed)
    if not (device.load_in_4bit or device.use_unsloth):
        model.to(torch_device)  # quantized and Unsloth models are placed by their loaders
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.learning_rate, weight_decay=args.weight_decay)
    scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer,
        num_warmup_steps=math.ceil(args.warmup_ratio * plan.total_steps),
        num_training_steps=plan.total_steps,
    )

    step = 0
    early = EarlyStopping(args.early_stopping_patience, args.early_stopping_min_delta)
    # Rank 0's copy of the adapter weights at the best evaluation (None without a validation split).
    best_weights: dict[str, Any] | None = None
    interval = args.evaluation_interval(plan.total_steps)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = load_checkpoint(Path(directory), model, optimizer)
        step = int(state["step"])
        early.restore(state.get("early_stopping", {}))
        best_weights = state["best_weights"] if rank == 0 else None
        for _ in range(step):
            scheduler.step()
        torch.manual_seed(args.seed + step)
    history = [r for r in files.read_metrics() if r["step"] <= step] if rank == 0 else []
    ddp_model = ray.train.torch.prepare_model(model, move_to_device=False) if world > 1 else model
    validation = run_batches(validation_examples, args, pad, 0)[rank::world] if validation_examples else []

    def evaluate() -> float | None:
        if not validation_examples:
            return None
        total, tokens = _all_reduce(list(evaluate_loss(model, validation, torch_device, autocast_dtype)))
        return total / max(tokens, 1)

    def checkpoint_and_report(metrics: dict[str, Any], final: bool) -> None:
        state = {
            "step": step,
            "total_steps": plan.total_steps,
            "final": final,
            "early_stopping": early.state(),
        }
        if rank != 0:
            ray.train.report(metrics, checkpoint=None)
            return
        with tempfile.TemporaryDirectory() as directory:
            save_checkpoint(Path(directory), model, optimizer, state, best_weights)
            ray.train.report(
                metrics,
                checkpoint=ray.train.Checkpoint.from_directory(directory),
                checkpoint_dir_name=f"checkpoint-{step:06d}-{time.time_ns()}",
            )

    cached_epoch, mine = -1, []
    metrics: dict[str, Any] = {"step": step}
    model.train()
    if step >= plan.total_steps or early.stopped:
        # Resumed after the last step (e.g. the publish failed): hand back the final checkpoint again.
        checkpoint_and_report(metrics, final=True)
        return
    while step < plan.total_steps:
        epoch, index = divmod(step, plan.steps_per_epoch)
        if epoch != cached_epoch:
            batches = run_batches(train_examples, args, pad, epoch)
            mine = batches[rank::world][: plan.batches_per_worker]
            cached_epoch = epoch
        micro = mine[
            index * args.gradient_accumulation_steps : (index + 1) * args.gradient_accumulation_steps
        ]
        if (
            config.get("fault_step")
            and step + 1 == config["fault_step"]
            and rank == world - 1
            and files.take_fault()
        ):
            os._exit(1)  # test-only: simulate a worker crash (enabled by settings.training.test_fault_step)

        started = time.perf_counter()
        label_tokens = _all_reduce([float(sum(batch.label_tokens for batch in micro))])[0]
        loss_sum = 0.0
        for number, batch in enumerate(micro):
            last = number == len(micro) - 1
            sync = contextlib.nullcontext() if last or world == 1 else ddp_model.no_sync()
            with sync:
                loss = token_loss_sum(ddp_model, batch, torch_device, autocast_dtype)
                # DDP averages gradients over workers; scaling by world / global tokens makes the result
                # the exact mean over every labelled token of the step.
                (loss * world / max(label_tokens, 1.0)).backward()
            loss_sum += float(loss)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, args.max_grad_norm))
        learning_rate = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1

        total_loss, real_tokens, cancel = _all_reduce(
            [
                loss_sum,
                float(sum(batch.real_tokens for batch in micro)),
                float(rank == 0 and files.cancel_requested),
            ]
        )
        elapsed = time.perf_counter() - started
        metrics = {
            "step": step,
            "total_steps": plan.total_steps,
            "epoch": round(step / plan.steps_per_epoch, 4),
            "loss": total_loss / max(label_tokens, 1.0),
            "learning_rate": learning_rate,
            "grad_norm": grad_norm,
            "tokens_per_second": real_tokens / elapsed,
            "step_seconds": elapsed,
            "memory_bytes": peak_memory_bytes(device.device),
            "time": time.time(),
        }
        if (interval and step % interval == 0) or step == plan.total_steps:
            eval_loss = evaluate()
            if eval_loss is not None:
                # Every rank sees the same all-reduced loss, so all take the same stop decision.
                if early.update(step, eval_loss) and rank == 0:
                    best_weights = adapter_snapshot(model)
                metrics.update(
                    eval_loss=eval_loss, best_eval_loss=early.best_eval_loss, best_step=early.best_step
                )
                if early.stopped:
                    metrics["stopped_early"] = 1.0
        if rank == 0:
            history.append(metrics)
            files.write_metrics(history)
        epoch_end = (step % plan.steps_per_epoch) == 0
        due = (step % args.checkpoint_steps == 0) if args.checkpoint_steps else epoch_end
        final = step == plan.total_steps or early.stopped
        if due or cancel or final:
            checkpoint_and_report(metrics, final=final)
        if cancel or early.stopped:
            return
