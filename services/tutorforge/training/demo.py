"""Demo stage: a short LoRA run on Ray (2 CPU workers, the default recipe cut to the demo's time budget) over
the dataset of the previous stage, followed live over gRPC, then the adapter is published for the inference
and optimization stages."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tutorforge.training.cli import follow
from tutorforge.v1 import common_pb2, training_pb2, training_pb2_grpc

if TYPE_CHECKING:
    from tutorforge.demo import DemoContext

TITLE = "Training: LoRA fine-tuning on Ray Train"
ADAPTER_NAME = "socratic-tutor"
# The default recipe (lr 1e-3, cosine, warm-up 10%, 512-token rows so the prompts keep their course
# passages, LoRA r 16) for as many ~9 s steps as ~6 minutes allow on 2 cores, validated once at the end;
# `tutorforge train` without --max-steps runs the full recipe (docs/training.md).
DEMO_STEPS = 36


def run(context: DemoContext) -> None:
    dataset = context.results["dataset"]
    stub = training_pb2_grpc.TrainingServiceStub(context.channel)
    context.console.print(
        f"Training adapter [bold]{ADAPTER_NAME}[/] on dataset [bold]{dataset}[/] with the default recipe "
        "(lr 1e-3, cosine after 10% warm-up, loss on tutor turns only, early stopping on the validation "
        f"split), cut to {DEMO_STEPS} steps of packed 512-token rows on 2 Ray workers (DDP, gloo)"
    )
    job = stub.StartTraining(
        training_pb2.StartTrainingRequest(
            dataset=dataset,
            adapter_name=ADAPTER_NAME,
            # Only the length is cut for the demo's time budget: the learning rate, schedule, warm-up and
            # early stopping are the defaults.
            arguments=training_pb2.TrainingArguments(max_steps=DEMO_STEPS, eval_steps=0),
            resources=training_pb2.ResourceConfig(num_workers=2),
            metadata={"subject": "mixed", "grade_level": "middle school", "teaching_style": "socratic"},
        )
    ).job
    job = follow(stub, job.id)
    if job.state != common_pb2.JOB_STATE_SUCCEEDED:
        raise RuntimeError(f"training job {job.id} ended {common_pb2.JobState.Name(job.state)}: {job.error}")
    metrics = job.metrics
    validation = (
        f", best validation loss {metrics['best_eval_loss']:.3f} at step {metrics['best_step']:.0f}"
        + (" (stopped early)" if metrics.get("stopped_early") else "")
        if "best_eval_loss" in metrics
        else ""
    )
    context.console.print(
        f"loss {metrics['initial_loss']:.3f} → {metrics['final_loss']:.3f}{validation}, "
        f"{metrics['mean_tokens_per_second']:.0f} tokens/s; published "
        f"[bold]{job.result}@{job.labels['adapter_version']}[/] "
        f"(loss curve and TensorBoard events under training/runs/{job.id}/ in the store)"
    )
    context.results["adapter"] = job.result
