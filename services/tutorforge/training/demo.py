"""Demo stage: a small LoRA run on Ray (2 CPU workers, a few steps) over the dataset of the previous stage,
followed live over gRPC, then the adapter is published for the inference stage."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tutorforge.training.cli import follow
from tutorforge.v1 import common_pb2, training_pb2, training_pb2_grpc

if TYPE_CHECKING:
    from tutorforge.demo import DemoContext

TITLE = "Training: LoRA fine-tuning on Ray Train"
ADAPTER_NAME = "socratic-tutor"


def run(context: DemoContext) -> None:
    dataset = context.results["dataset"]
    stub = training_pb2_grpc.TrainingServiceStub(context.channel)
    context.console.print(
        f"Training adapter [bold]{ADAPTER_NAME}[/] on dataset [bold]{dataset}[/]: 2 Ray workers (DDP, gloo), "
        "8 steps, packed sequences of up to 256 tokens, LoRA r 16 on the attention projections"
    )
    job = stub.StartTraining(
        training_pb2.StartTrainingRequest(
            dataset=dataset,
            adapter_name=ADAPTER_NAME,
            arguments=training_pb2.TrainingArguments(
                max_steps=8,
                batch_size=2,
                gradient_accumulation_steps=1,
                learning_rate=5e-4,
                max_seq_length=256,
                eval_steps=4,
                checkpoint_steps=4,
            ),
            resources=training_pb2.ResourceConfig(num_workers=2),
            metadata={"subject": "mixed", "grade_level": "middle school", "teaching_style": "socratic"},
        )
    ).job
    job = follow(stub, job.id)
    if job.state != common_pb2.JOB_STATE_SUCCEEDED:
        raise RuntimeError(f"training job {job.id} ended {common_pb2.JobState.Name(job.state)}: {job.error}")
    metrics = job.metrics
    validation = f", validation loss {metrics['eval_loss']:.3f}" if "eval_loss" in metrics else ""
    context.console.print(
        f"loss {metrics['initial_loss']:.3f} → {metrics['final_loss']:.3f}{validation}, "
        f"{metrics['mean_tokens_per_second']:.0f} tokens/s; published "
        f"[bold]{job.result}@{job.labels['adapter_version']}[/] "
        f"(loss curve and TensorBoard events under training/runs/{job.id}/ in the store)"
    )
    context.results["adapter"] = job.result
