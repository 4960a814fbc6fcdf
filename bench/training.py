"""Training throughput and padding benchmark (CPU, SmolLM2-135M + LoRA r16, the starter dialogues).

Prints tokens/s of
- a plain single-process peft loop (1 and 2 torch threads),
- Ray Train with 1 worker and with 2 workers (DDP over gloo), through the real training service,
on the same batches (same tokens per step per worker), steady state (the first step is left out), and the
padded-token share of the batches with and without packing.

Targets: Ray overhead ≤ 10% of the plain loop at equal tokens (1 worker vs 1 thread); padding ≤ 5%
with packing.

    python bench/training.py [--steps 6] [--seq-len 256] [--batch-size 2]

With `--recipes` it instead compares the default recipe with the old one (lr 5e-4, linear schedule, 3%
warm-up, no early stopping) through the training service on a dataset built like the demo's from its
sample files (starter dialogues, instructions, teacher scenarios; decontaminated against the evaluation
items): train and validation loss every few steps, and seconds per step.

    python bench/training.py --recipes [--steps 20] [--seq-len 256] [--batch-size 2] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
STARTER = REPO / "services" / "tutorforge" / "samples" / "dialogues" / "starter.jsonl"


def settings_for(root: Path):
    from tutorforge.core.settings import Settings

    settings = Settings()
    settings.home = root
    settings.store = str(root / "store")
    settings.models.cache_dir = REPO / ".cache" / "models"
    settings.log_level = "WARNING"
    return settings


def padding_table(records: list[dict], tokenizer) -> None:
    from tutorforge.training.data import epoch_batches, padding_share, tokenize_records

    print("\npadded-token share of one epoch (starter dialogues, batch 4)")
    print(f"{'max_seq_len':>12} {'packing':>10} {'grouped':>10} {'no packing':>11}")
    for length in (256, 512, 1024):
        examples = tokenize_records(tokenizer, records, length).examples
        shares = []
        for packing, grouped in ((True, False), (False, True), (False, False)):
            batches = epoch_batches(
                examples,
                batch_size=4,
                max_seq_length=length,
                pad_token_id=tokenizer.pad_token_id,
                packing=packing,
                group_lengths=grouped,
                seed=0,
                epoch=0,
            )
            shares.append(padding_share(batches))
        print(f"{length:>12} {shares[0]:>10.1%} {shares[1]:>10.1%} {shares[2]:>11.1%}")


def plain_loop(settings, examples, args, threads: int) -> float:
    """The same per-step work as one Ray worker, in this process: tokens/s after the first step."""
    import torch

    from tutorforge.core.models import chat_model_path
    from tutorforge.training.config import LoraSpec, TrainArgs
    from tutorforge.training.loop import run_batches, token_loss_sum
    from tutorforge.training.modeling import choose_device, load_for_training

    torch.set_num_threads(threads)
    train_args = TrainArgs(
        batch_size=args.batch_size, gradient_accumulation_steps=1, max_seq_length=args.seq_len
    )
    model = load_for_training(
        chat_model_path(settings.models), LoraSpec(), choose_device(False, False, 0), args.seq_len, 42
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    batches = run_batches(examples, train_args, 2, 0)
    rates = []
    model.train()
    for step in range(args.steps):
        batch = batches[step % len(batches)]
        started = time.perf_counter()
        loss = token_loss_sum(model, batch, "cpu")
        (loss / batch.label_tokens).backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        rates.append(batch.real_tokens / (time.perf_counter() - started))
    return statistics.mean(rates[1:])


def ray_run(settings, service, workers: int, args) -> tuple[float, float]:
    """(steady tokens/s over all workers, wall seconds of the whole job) through the training service."""
    spec = service.default_spec("starter", f"bench-{workers}")
    spec.args.max_steps = args.steps
    spec.args.batch_size = args.batch_size
    spec.args.gradient_accumulation_steps = 1
    spec.args.max_seq_length = args.seq_len
    spec.args.checkpoint_steps = args.steps
    spec.resources.num_workers = workers
    started = time.perf_counter()
    record = service.start(spec)
    record = service.wait(record.id)
    wall = time.perf_counter() - started
    if record.state.value != "SUCCEEDED":
        raise SystemExit(f"ray run with {workers} worker(s) failed: {record.error}")
    history = service.jobs.store.read_json(f"training/runs/{record.id}/metrics.json")
    return statistics.mean(r["tokens_per_second"] for r in history[1:]), wall


# The demo's former arguments (and, but for the learning rate, the former defaults).
OLD_RECIPE = {
    "learning_rate": 5e-4,
    "lr_scheduler": "linear",
    "warmup_ratio": 0.03,
    "early_stopping_patience": 0,
}


def demo_like_dataset(settings, store) -> str:
    """The demo dataset's file sources, built by the real dataset builder; returns its name."""
    from tutorforge import samples
    from tutorforge.artifacts.datasets import DatasetRepository
    from tutorforge.datasets.builder import (
        BuildOptions,
        BuildRequest,
        EvaluationFile,
        FileSource,
        build_dataset,
    )
    from tutorforge.datasets.validation import chat_token_counter

    files = [samples.starter_dialogues(), samples.instructions(), samples.teacher_scenarios()]
    evaluation = samples.evaluation_items()
    request = BuildRequest(
        name="demo-like",
        sources=[FileSource(path.name, path.read_bytes()) for path in files],
        options=BuildOptions(seed=0),
        evaluation=[EvaluationFile(evaluation.name, evaluation.read_bytes())],
    )
    count_tokens, tokenizer_name = chat_token_counter(settings.models)
    info = build_dataset(request, DatasetRepository(store), count_tokens, tokenizer_name)
    print(f"dataset demo-like@{info.version}: {info.stats.get('train_records')} train / "
          f"{info.stats.get('validation_records')} validation records")
    return "demo-like"


def compare_recipes(settings, store, args) -> None:
    from tutorforge.training.service import TrainingService

    dataset = demo_like_dataset(settings, store)
    service = TrainingService(settings, store)
    try:
        for label, changes in (("old (5e-4, linear, 3% warm-up)", OLD_RECIPE), ("new defaults", {})):
            spec = service.default_spec(dataset, "bench-recipe")
            spec.args.max_steps = args.steps
            spec.args.batch_size = args.batch_size
            spec.args.max_seq_length = args.seq_len
            spec.args.eval_steps = 5
            spec.args.checkpoint_steps = args.steps
            spec.resources.num_workers = args.workers
            for name, value in changes.items():
                setattr(spec.args, name, value)
            started = time.perf_counter()
            record = service.wait(service.start(spec).id)
            wall = time.perf_counter() - started
            if record.state.value != "SUCCEEDED":
                raise SystemExit(f"{label} failed: {record.error}")
            history = store.read_json(f"training/runs/{record.id}/metrics.json")
            print(f"\n{label}: lr {spec.args.learning_rate:g} {spec.args.lr_scheduler}, "
                  f"warm-up {spec.args.warmup_ratio:g}, patience {spec.args.early_stopping_patience}")
            print(f"{'step':>5} {'loss':>7} {'eval':>7} {'lr':>9} {'s/step':>7}")
            for r in history:
                evaluated = f"{r['eval_loss']:7.3f}" if "eval_loss" in r else " " * 7
                print(
                    f"{r['step']:>5} {r['loss']:7.3f} {evaluated} {r['learning_rate']:9.2e} "
                    f"{r['step_seconds']:7.1f}"
                )
            steady = [r["step_seconds"] for r in history[1:]]
            print(f"  mean {statistics.mean(steady):.1f} s/step (first step left out), "
                  f"{statistics.mean(r['tokens_per_second'] for r in history[1:]):.0f} tokens/s, "
                  f"job wall time {wall:.0f} s incl. Ray start; "
                  f"stopped early: {any(r.get('stopped_early') for r in history)}")
    finally:
        service.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--recipes", action="store_true", help="compare the default recipe with the old one")
    args = parser.parse_args()

    from tutorforge.artifacts.datasets import DatasetInfo, DatasetRepository
    from tutorforge.artifacts.store import ArtifactStore
    from tutorforge.core.models import load_chat_tokenizer
    from tutorforge.training.data import tokenize_records
    from tutorforge.training.service import TrainingService

    if args.recipes:
        root = Path(tempfile.mkdtemp(prefix="tutorforge-bench-recipes-"))
        settings = settings_for(root)
        compare_recipes(settings, ArtifactStore(settings.store_url), args)
        return

    records = [json.loads(line) for line in STARTER.read_text(encoding="utf-8").splitlines() if line.strip()]
    random.Random(0).shuffle(records)
    root = Path(tempfile.mkdtemp(prefix="tutorforge-bench-training-"))
    settings = settings_for(root)
    tokenizer = load_chat_tokenizer(settings.models)
    print(
        f"machine: {os.cpu_count()} CPU cores (shared with other work: numbers are noisy); "
        f"{args.steps} steps of batch {args.batch_size} × ≤{args.seq_len} tokens per worker, packing on"
    )
    padding_table(records, tokenizer)

    store = ArtifactStore(settings.store_url)
    DatasetRepository(store).save(
        DatasetInfo(name="starter", version="0bec4", content_hash="0bec4"),
        {"train": records, "validation": []},
    )
    examples = tokenize_records(tokenizer, records, args.seq_len).examples

    print("\nthroughput (real tokens per second, first step left out)")
    plain_1 = plain_loop(settings, examples, args, threads=1)
    print(f"  plain peft loop, 1 thread      {plain_1:8.1f}")
    plain_2 = plain_loop(settings, examples, args, threads=2)
    print(f"  plain peft loop, 2 threads     {plain_2:8.1f}")
    service = TrainingService(settings, store)
    try:
        ray_1, wall_1 = ray_run(settings, service, 1, args)
        print(
            f"  Ray Train, 1 worker (1 CPU)    {ray_1:8.1f}   "
            f"overhead vs plain 1 thread {1 - ray_1 / plain_1:+.1%}"
            f"   (job wall time {wall_1:.0f} s incl. Ray start)"
        )
        ray_2, wall_2 = ray_run(settings, service, 2, args)
        print(
            f"  Ray Train, 2 workers (DDP)     {ray_2:8.1f}   vs plain 2 threads {ray_2 / plain_2 - 1:+.1%}"
            f"   (job wall time {wall_2:.0f} s)"
        )
    finally:
        service.shutdown()


if __name__ == "__main__":
    main()
