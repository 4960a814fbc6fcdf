"""`tutorforge train …` and `tutorforge jobs list|show|watch|cancel|resume` (training jobs) on a running
server."""

from __future__ import annotations

import json
from itertools import islice
from typing import Annotated, Optional

import typer
from rich.table import Column, Table

from tutorforge.client import JobHandle, TrainingClient
from tutorforge.core.cli_support import (
    DEFAULT_ADDRESS,
    AddressOption,
    JsonOption,
    comparison_table,
    connect,
    console,
    follow_and_get,
    job_state_label,
    print_json,
    rpc_errors,
)
from tutorforge.core.names import BASE
from tutorforge.training.config import LR_SCHEDULERS, LoraSpec, TrainArgs
from tutorforge.v1 import common_pb2, jobs_pb2, training_pb2

DEFAULTS = TrainArgs()

jobs_app = typer.Typer(
    name="jobs", help="Training jobs: list, show, watch, cancel, resume.", no_args_is_help=True
)

_STATES = {name.removeprefix("JOB_STATE_").lower(): value for name, value in common_pb2.JobState.items()}
_STATE_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "cancelled": "yellow",
    "running": "cyan",
    "queued": "dim",
}


def _client(address: str) -> TrainingClient:
    return connect(address).training


def follow(job: JobHandle, quiet: bool = False) -> common_pb2.Job:
    """Follow a job with a live progress bar (step, loss, ETA) on stderr; returns the final job."""
    return follow_and_get(job, metric="loss", quiet=quiet)


def _print_job(job: common_pb2.Job) -> None:
    state = job_state_label(job.state)
    console.print(
        f"[bold]{job.id}[/] [{_STATE_STYLE.get(state, 'white')}]{state}[/] {job.progress:.0%} — {job.message}"
    )
    if job.error:
        console.print(f"[red]error:[/] {job.error}")
    if job.labels:
        console.print("labels: " + ", ".join(f"{k}={v}" for k, v in sorted(job.labels.items())))
    if job.metrics:
        console.print("metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(job.metrics.items())))
    if job.result:
        console.print(f"result: [bold]{job.result}[/]")


def _show(job: common_pb2.Job, as_json: bool) -> None:
    if as_json:
        print_json(job)
    else:
        _print_job(job)


def train(
    dataset: Annotated[str, typer.Argument(help="Dataset name (built with `tutorforge dataset build`).")],
    adapter_name: Annotated[
        str, typer.Option("--adapter-name", help="Name under which the adapter is published.")
    ],
    dataset_version: Annotated[
        str, typer.Option("--dataset-version", help="Dataset version (default: newest).")
    ] = "",
    workers: Annotated[
        int, typer.Option("--workers", help="Ray workers (default from server settings).")
    ] = 0,
    epochs: Annotated[float, typer.Option(help=f"Epochs (default {DEFAULTS.epochs:g}).")] = 0.0,
    max_steps: Annotated[
        int, typer.Option("--max-steps", help="Run exactly this many optimizer steps (overrides --epochs).")
    ] = 0,
    max_seq_len: Annotated[
        int,
        typer.Option(
            "--max-seq-len",
            help=f"Max tokens per sequence (default {DEFAULTS.max_seq_length}); longer records keep their "
            "assistant turns (trailing exchanges, then the end of the system prompt, go first).",
        ),
    ] = 0,
    rank: Annotated[int, typer.Option(help=f"LoRA rank (default {LoraSpec.rank}).")] = 0,
    alpha: Annotated[float, typer.Option(help=f"LoRA alpha (default {LoraSpec.alpha:g}).")] = 0.0,
    learning_rate: Annotated[
        float, typer.Option("--learning-rate", help=f"Peak learning rate (default {DEFAULTS.learning_rate:g}).")
    ] = 0.0,
    lr_scheduler: Annotated[
        str,
        typer.Option(
            "--lr-scheduler", help=f"{', '.join(LR_SCHEDULERS)} (default {DEFAULTS.lr_scheduler})."
        ),
    ] = "",
    warmup_ratio: Annotated[
        Optional[float],
        typer.Option("--warmup-ratio", help=f"Share of steps warming up (default {DEFAULTS.warmup_ratio:g})."),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help=f"Per worker (default {DEFAULTS.batch_size}).")
    ] = 0,
    grad_accum: Annotated[
        int,
        typer.Option(
            "--grad-accum", help=f"Gradient accumulation steps (default {DEFAULTS.gradient_accumulation_steps})."
        ),
    ] = 0,
    eval_steps: Annotated[
        Optional[int],
        typer.Option(
            "--eval-steps",
            help="Validate every N steps (default: about 5 times per run; 0 = at the end only).",
        ),
    ] = None,
    patience: Annotated[
        Optional[int],
        typer.Option(
            "--patience",
            help=f"Stop after this many evaluations without improvement (default "
            f"{DEFAULTS.early_stopping_patience}; 0 = never). The best evaluated weights are published.",
        ),
    ] = None,
    min_delta: Annotated[
        Optional[float],
        typer.Option(
            "--min-delta",
            help=f"Validation-loss drop that counts as an improvement (default "
            f"{DEFAULTS.early_stopping_min_delta:g}).",
        ),
    ] = None,
    checkpoint_steps: Annotated[
        int, typer.Option("--checkpoint-steps", help="Checkpoint every N steps (0 = per epoch).")
    ] = 0,
    no_packing: Annotated[
        bool, typer.Option("--no-packing", help="Pad instead of packing sequences.")
    ] = False,
    subject: Annotated[str, typer.Option(help="Adapter metadata: subject.")] = "",
    grade_level: Annotated[str, typer.Option("--grade-level", help="Adapter metadata: grade level.")] = "",
    teaching_style: Annotated[
        str, typer.Option("--teaching-style", help="Adapter metadata: teaching style.")
    ] = "",
    use_unsloth: Annotated[bool, typer.Option("--unsloth", help="Use Unsloth (needs CUDA workers).")] = False,
    load_in_4bit: Annotated[
        bool, typer.Option("--load-in-4bit", help="4-bit QLoRA (needs CUDA workers).")
    ] = False,
    merge: Annotated[
        bool, typer.Option("--merge-and-export", help="Also export a merged full model.")
    ] = False,
    detach: Annotated[bool, typer.Option("--detach", help="Print the job id and return at once.")] = False,
    benchmark: Annotated[
        bool,
        typer.Option(
            "--benchmark",
            help="Then run the tutor benchmark (base vs the new adapter, through chat); its scores are recorded "
            "in the adapter's lineage.",
        ),
    ] = False,
    as_json: JsonOption = False,
    address: AddressOption = DEFAULT_ADDRESS,
) -> None:
    """Fine-tune a LoRA adapter on a dataset with Ray Train and publish it to the adapter registry.

    The defaults are a recipe that teaches the Socratic style on CPU (docs/training.md): 1 epoch, lr 1e-3
    with cosine decay after 10% warm-up, loss on assistant turns only, validation about 5 times per run
    with early stopping, and the best evaluated weights published with their lineage."""
    metadata = {
        k: v
        for k, v in (("subject", subject), ("grade_level", grade_level), ("teaching_style", teaching_style))
        if v
    }
    request = training_pb2.StartTrainingRequest(
        dataset=dataset,
        dataset_version=dataset_version,
        adapter_name=adapter_name,
        lora=training_pb2.LoraConfig(rank=rank, alpha=alpha),
        arguments=training_pb2.TrainingArguments(
            epochs=epochs,
            batch_size=batch_size,
            gradient_accumulation_steps=grad_accum,
            learning_rate=learning_rate,
            lr_scheduler=lr_scheduler,
            max_seq_length=max_seq_len,
            checkpoint_steps=checkpoint_steps,
            max_steps=max_steps,
            packing=not no_packing,
            # Unset optional fields take the server's defaults.
            **{
                name: value
                for name, value in (
                    ("warmup_ratio", warmup_ratio),
                    ("eval_steps", eval_steps),
                    ("early_stopping_patience", patience),
                    ("early_stopping_min_delta", min_delta),
                )
                if value is not None
            },
        ),
        resources=training_pb2.ResourceConfig(num_workers=workers),
        metadata=metadata,
        use_unsloth=use_unsloth,
        load_in_4bit=load_in_4bit,
        merge_and_export=merge,
    )
    with rpc_errors():
        handle = _client(address).start(request)
        if detach:
            if as_json:
                print_json({"job_id": handle.id})
            else:
                console.print(handle.id)
            return
        job = follow(handle, quiet=as_json)
    _finish(job, as_json)
    if benchmark:
        _benchmark(address, job.result, as_json)


def _benchmark(address: str, adapter: str, as_json: bool) -> None:
    """The tutor benchmark on the base model and the new adapter; Evaluate records the adapter's scores in
    its registry lineage."""
    optimization = connect(address).optimization
    with rpc_errors():
        started = optimization.evaluate([BASE, f"adapter:{adapter}"], evaluation_set="tutor-benchmark")
        run = follow_and_get(started, label="benchmark", quiet=as_json)
        if job_state_label(run.state) != "succeeded":
            _print_job(run)
            raise typer.Exit(code=1)
        report = optimization.get_evaluation(run.result).report
    if as_json:
        print_json(report)
    else:
        console.print(comparison_table(report))


def _finish(job: common_pb2.Job, as_json: bool) -> None:
    if as_json:
        print_json(job)
    elif job_state_label(job.state) == "succeeded":
        version = job.labels.get("adapter_version", "")
        metrics = job.metrics
        summary = f"final loss {metrics.get('final_loss', float('nan')):.4f}"
        if "best_eval_loss" in metrics:
            summary += (
                f", best validation loss {metrics['best_eval_loss']:.4f} at step {metrics['best_step']:.0f}"
                + (" (stopped early)" if metrics.get("stopped_early") else "")
            )
        console.print(
            f"[bold green]adapter[/] [bold]{job.result}[/]{'@' + version if version else ''} ({summary})"
        )
    else:
        _print_job(job)
    if job_state_label(job.state) != "succeeded":
        raise typer.Exit(code=1)


@jobs_app.command("list")
def list_jobs(
    state: Annotated[
        Optional[str],
        typer.Option(help=f"Only jobs in this state: {', '.join(k for k in _STATES if k != 'unspecified')}."),
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many (newest first).")] = 50,
    as_json: JsonOption = False,
    address: AddressOption = DEFAULT_ADDRESS,
) -> None:
    """List training jobs, newest first."""
    if state is not None and state.lower() not in _STATES:
        raise typer.BadParameter(f"unknown state {state!r}; use one of {', '.join(_STATES)}")
    with rpc_errors():
        jobs = list(islice(_client(address).jobs(state=_STATES[state.lower()] if state else 0, page_size=limit), limit))
    response = jobs_pb2.ListJobsResponse(jobs=jobs)
    if as_json:
        print_json(response)
        return
    table = Table(
        Column("id", no_wrap=True),
        Column("state", no_wrap=True),
        "progress",
        "dataset",
        "adapter",
        "loss",
        "message",
    )
    for job in response.jobs:
        state_name = job_state_label(job.state)
        loss = job.metrics.get("final_loss", job.metrics.get("loss"))
        table.add_row(
            job.id,
            f"[{_STATE_STYLE.get(state_name, 'white')}]{state_name}[/]",
            f"{job.progress:.0%}",
            job.labels.get("dataset", ""),
            job.labels.get("adapter_name", ""),
            "" if loss is None else f"{loss:.4f}",
            (job.error or job.message)[:60],
        )
    console.print(table)


@jobs_app.command("show")
def show_job(job_id: str, as_json: JsonOption = False, address: AddressOption = DEFAULT_ADDRESS) -> None:
    """One training job: state, metrics, labels, result, and its parameters."""
    with rpc_errors():
        job = _client(address).get_job(job_id)
    _show(job, as_json)
    if not as_json:
        console.print_json(json.dumps(json.loads(job.parameters_json or "{}")))


@jobs_app.command("watch")
def watch_job(job_id: str, as_json: JsonOption = False, address: AddressOption = DEFAULT_ADDRESS) -> None:
    """Follow a training job until it ends (live progress bar)."""
    with rpc_errors():
        job = follow(_client(address).job(job_id), quiet=as_json)
    _finish(job, as_json)


@jobs_app.command("cancel")
def cancel_job(job_id: str, as_json: JsonOption = False, address: AddressOption = DEFAULT_ADDRESS) -> None:
    """Stop a training job's workers; its last checkpoint is kept for `jobs resume`."""
    with rpc_errors():
        job = _client(address).cancel_job(job_id)
    _show(job, as_json)


@jobs_app.command("resume")
def resume_job(
    job_id: str,
    detach: Annotated[bool, typer.Option("--detach", help="Return at once.")] = False,
    as_json: JsonOption = False,
    address: AddressOption = DEFAULT_ADDRESS,
) -> None:
    """Continue a failed or cancelled training job from its last checkpoint."""
    with rpc_errors():
        handle = _client(address).resume(job_id)
        if detach:
            _show(handle.job, as_json)
            return
        job = follow(handle, quiet=as_json)
    _finish(job, as_json)


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.add_typer(jobs_app, name="jobs")
