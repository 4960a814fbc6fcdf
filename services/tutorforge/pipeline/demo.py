"""`tutorforge demo`: start every service embedded in this process (Qdrant's engine in process, local
Ray, in-process model) and run the whole pipeline on the bundled sample material through the client SDK,
stage by stage, showing what each produced."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.rule import Rule
from rich.table import Table

from tutorforge import samples
from tutorforge.client import Tutorforge, file_source, seed_source, synthetic_source
from tutorforge.core.cli_support import comparison_table, follow_job
from tutorforge.core.logs import configure_logging
from tutorforge.core.names import BASE, model_label
from tutorforge.core.server import start_server
from tutorforge.core.settings import Settings
from tutorforge.inference.cli import citations_table
from tutorforge.optimization.turns import BENCHMARK_SET
from tutorforge.pipeline import stages
from tutorforge.pipeline.results import ChatTurn, PipelineResult
from tutorforge.v1 import retrieval_pb2

# Retrieval: example searches over the ingested material (query, mode, filters).
EXAMPLE_SEARCHES = (
    ("Why can't I add the denominators when adding fractions?", "hybrid", None),
    ("What happens to light energy inside a leaf?", "hybrid", None),
    ("equal and opposite forces", "sparse", {"category": "physics"}),
    ("How should a tutor answer a student who just wants the answer?", "dense", None),
)
# Datasets: small on purpose, generation on 2 CPU cores runs at a few tokens per second.
DATASET = "demo-socratic"
SYNTHETIC_CONVERSATIONS = 1
SYNTHETIC_MAX_TOKENS = 192
# A tenth of ~580 records: validation turns for early stopping and for scoring the program's candidates.
VALIDATION_FRACTION = 0.1
# Training: the default recipe (lr 1e-3, cosine, warm-up 10%, 512-token rows so the prompts keep their
# course passages, LoRA r 16) for as many ~9 s steps as ~6 minutes allow on 2 cores, validated once at the
# end; `tutorforge train` without --max-steps runs the full recipe (docs/training.md).
ADAPTER_NAME = "socratic-tutor"
DEMO_STEPS = 36
# Inference: short turns keep the stage quick on a 2-core CPU.
QUESTIONS = (
    "Why can't I just add the denominators when I add 1/2 and 1/3?",
    "What does a leaf do with the sunlight it absorbs?",
)
FOLLOW_UP = "I think the plant eats soil. Is that right?"
NEW_TOKENS = 64
# Optimization: small on purpose, the whole demo has 10 minutes on 2 cores. BootstrapFewShot keeps the
# adapter's own replies that ask, keep the answer back, cite and beat the uncompiled program (the demo
# bar); the dataset's labeled turns as demonstrations (LabeledFewShot) made its replies shorter and scored
# 0.85x the base on the held-out turns.
PROGRAM = "demo-tutor"
MAX_TOKENS = 64
TRAIN_EXAMPLES = 12
# Validation turns the program is compiled against; the report uses more.
OPTIMIZATION_VALIDATION = 6
# Tried with the unoptimized program first (6 more replies); kept only if it scores better.
FREQUENCY_PENALTIES = [0.5]
REPORT_EXAMPLES = 24


@dataclass
class DemoContext:
    tf: Tutorforge
    address: str
    settings: Settings
    workdir: Path
    console: Console
    results: PipelineResult = field(default_factory=PipelineResult)


def demo_settings(workdir: Path) -> Settings:
    workdir = workdir.resolve()
    settings = Settings()
    settings.home = workdir
    settings.store = str(workdir / "store")
    settings.retrieval.edge_path = workdir / "qdrant"
    settings.log_level = "WARNING"
    return settings


def retrieval_stage(context: DemoContext) -> None:
    console = context.console
    with console.status(f"ingesting {len(samples.material_documents())} documents (embedding on CPU)…"):
        material = stages.ingest(context.tf, stages.sample_documents())
    context.results.material = material
    table = Table("document", "outcome", "chunks", title=f"ingested in {material.seconds:.1f} s ({material.chunks_written} chunks written)")
    for result in material.results:
        outcome = retrieval_pb2.IngestOutcome.Name(result.outcome).removeprefix("INGEST_OUTCOME_").lower()
        table.add_row(result.document_id, outcome if not result.error else f"{outcome}: {result.error}", str(result.chunks_written or result.chunks_skipped))
    console.print(table)

    for query, mode, filters in EXAMPLE_SEARCHES:
        # MiniLM cosines of question vs. passage rarely reach the 0.7 default of dense search.
        hits = context.tf.retrieval.search(query, mode=mode, limit=3, filters=filters, score_threshold=0.3 if mode == "dense" else None)
        where = "".join(f", {name}={value}" for name, value in (filters or {}).items())
        console.print(f"\n[bold]?[/] {query} [dim]({mode}{where})[/]")
        for rank, hit in enumerate(hits, 1):
            excerpt = " ".join(hit.text.split())[:180]
            console.print(f"  [cyan]{rank}.[/] [bold]{hit.document_id} #{hit.chunk_index}[/] [dim]{hit.metadata.source} · score {hit.score:.3f}[/]")
            console.print(f"     {excerpt}…", highlight=False)
    stats = context.tf.retrieval.stats()
    console.print(f"\n{stats.documents} documents, {stats.chunks} chunks in the {stats.store_backend} store ({stats.embedding_model})")


def datasets_stage(context: DemoContext) -> None:
    # Only Socratic student-tutor dialogues: the instruction and teacher-scenario samples model other
    # replies (explanations, advice to teachers) that the tutor should not learn to give.
    sources = [
        seed_source(bundled=True),
        file_source(samples.starter_dialogues()),
        synthetic_source("fractions", conversations=SYNTHETIC_CONVERSATIONS, exchanges=1, max_tokens=SYNTHETIC_MAX_TOKENS),
    ]
    dataset = stages.build_dataset(
        context.tf, DATASET, sources,
        options={"seed": 0, "validation_fraction": VALIDATION_FRACTION},
        decontaminate_against=[samples.evaluation_items(), samples.benchmark_turns()],
        description="tutorforge demo dataset",
        on_event=lambda event: context.console.print(f"  [dim]{event.progress:4.0%}[/] {event.message}"),
    )
    context.results.dataset = dataset
    version, stats = dataset.dataset, dataset.dataset.stats
    context.console.print(
        f"[bold]{DATASET}[/] version {version.version}: {stats.records} records "
        f"({stats.train_records} train / {stats.validation_records} validation), {stats.turns} turns, "
        f"mean {stats.mean_tokens:.0f} tokens, tutor question rate {stats.question_rate:.0%}"
    )
    context.console.print("per subject: " + ", ".join(f"{k} {v}" for k, v in sorted(stats.records_per_subject.items())))
    table = Table("source", "read", "kept", "dropped (why)")
    for source in version.manifest.sources:
        why = ", ".join(f"{reason} {count}" for reason, count in sorted(source.dropped_by_reason.items()))
        table.add_row(source.source, str(source.records_read), str(source.records_kept), why)
    context.console.print(table)


def training_stage(context: DemoContext) -> None:
    dataset = context.results.dataset
    context.console.print(
        f"Training adapter [bold]{ADAPTER_NAME}[/] on dataset [bold]{dataset.name}[/] with the default recipe "
        "(lr 1e-3, cosine after 10% warm-up, loss on tutor turns only, early stopping on the validation "
        f"split), cut to {DEMO_STEPS} steps of packed 512-token rows on 2 Ray workers (DDP, gloo)"
    )
    # Only the length is cut for the demo's time budget: the learning rate, schedule, warm-up and early
    # stopping are the defaults.
    training = stages.train(
        context.tf, dataset, ADAPTER_NAME,
        max_steps=DEMO_STEPS, eval_steps=0, num_workers=2,
        metadata={"subject": "mixed", "grade_level": "middle school", "teaching_style": "socratic"},
        watch=lambda events: follow_job(events, metric="loss"),
    )
    context.results.training = training
    metrics = training.metrics
    validation = (
        f", best validation loss {metrics['best_eval_loss']:.3f} at step {metrics['best_step']:.0f}"
        + (" (stopped early)" if metrics.get("stopped_early") else "")
        if "best_eval_loss" in metrics
        else ""
    )
    context.console.print(
        f"loss {metrics['initial_loss']:.3f} → {metrics['final_loss']:.3f}{validation}, "
        f"{metrics['mean_tokens_per_second']:.0f} tokens/s; published "
        f"[bold]{training.adapter}@{training.adapter_version}[/] "
        f"(loss curve and TensorBoard events under training/runs/{training.job_id}/ in the store)"
    )


def inference_stage(context: DemoContext) -> None:
    console = context.console
    adapter = context.results.adapter
    console.print(f"answering with {'adapter [bold]' + adapter + '[/]' if adapter else 'the base model'} · {NEW_TOKENS} new tokens per turn")

    def question(text: str) -> None:
        console.print(f"\n[bold cyan]student>[/] {text}")
        console.print("[bold green]tutor>[/] ", end="")

    def answer(turn: ChatTurn) -> None:
        console.print()
        if turn.citations:
            console.print(citations_table(list(turn.citations)))
        summary = turn.summary
        answered_by = model_label(summary.adapter) + (" (fallback)" if summary.fell_back_to_base else "")
        console.print(
            f"[dim]{answered_by} · {summary.usage.completion_tokens} tokens · first token "
            f"{summary.time_to_first_token_seconds:.2f} s · {summary.duration_seconds:.1f} s[/]"
        )

    conversations = [[text] for text in QUESTIONS]
    conversations[-1].append(FOLLOW_UP)
    for turns in conversations:
        context.results.chat += stages.chat(
            context.tf, turns, adapter=adapter, max_tokens=NEW_TOKENS, on_question=question, on_answer=answer,
            on_token=lambda text: console.print(text, end="", markup=False, highlight=False, soft_wrap=True),
        )


def optimization_stage(context: DemoContext) -> None:
    console = context.console
    dataset, adapter = context.results.dataset, context.results.adapter
    program = stages.optimize(
        context.tf, PROGRAM, dataset, adapter=adapter, optimizer="bootstrap_few_shot",
        budget={
            "max_bootstrapped_demos": 2, "max_labeled_demos": 2, "threads": 8,
            "max_train_examples": TRAIN_EXAMPLES, "max_validation_examples": OPTIMIZATION_VALIDATION,
        },
        max_tokens=MAX_TOKENS, frequency_penalties=FREQUENCY_PENALTIES,
        watch=lambda events: follow_job(events, label="optimize", metric="best_score", out=console),
    )
    context.results.program = program
    info = program.program
    console.print(
        f"program [bold]{program.reference}[/] ({info.optimizer}): validation score {info.baseline_score:.3f} → "
        f"[bold]{info.optimized_score:.3f}[/], {info.lm_calls} LM calls, {info.lm_tokens} tokens"
    )

    # The program runs on the adapter it was compiled against: "program:NAME" is adapter + program.
    targets = [BASE, *([f"adapter:{adapter}"] if adapter else []), f"program:{program.name}"]
    folder = context.workdir / "report"
    # Measured on held-out benchmark turns: the validation split chose the program and stopped the training.
    evaluation = stages.evaluate(
        context.tf, targets, evaluation_set=BENCHMARK_SET, folder=folder,
        max_examples=REPORT_EXAMPLES, max_tokens=MAX_TOKENS, threads=8,
        watch=lambda events: follow_job(events, label="evaluate", metric="best_score", out=console),
    )
    context.results.evaluation = evaluation
    console.print(comparison_table(evaluation.report))
    base, *others = evaluation.report.targets
    for target in others:
        low, high = target.intervals["pedagogical_score"].low, base.intervals["pedagogical_score"].high
        console.print(
            f"{target.target}: pedagogical score {target.pedagogical_score / base.pedagogical_score:.2f}× base "
            f"({'intervals do not overlap' if low > high else 'intervals overlap'})"
        )
    charts = ", ".join(str(path) for path in evaluation.files if path.suffix == ".png")
    console.print(f"report: {folder / 'report.md'}; charts: {charts}")


# Stages in pipeline order, with the title each is shown under.
STAGES: tuple[tuple[str, Callable[[DemoContext], None]], ...] = (
    ("Retrieval: ingest the sample material, search it with cited sources", retrieval_stage),
    ("Datasets: lesson cards + starter dialogues + synthetic, decontaminated against the benchmark", datasets_stage),
    ("Training: LoRA fine-tuning on Ray Train", training_stage),
    ("Inference: the Socratic tutor answers from the material, with citations", inference_stage),
    ("Optimization: DSPy program and the pedagogical report", optimization_stage),
)


def run_demo(workdir: Path, port: int = 0, stages_to_run: int = len(STAGES)) -> DemoContext:
    """Run the first `stages_to_run` stages (all by default) on an embedded server."""
    # Logs and CI have no terminal: rich would fall back to 80 columns and truncate the report tables.
    console = Console(width=None if sys.stdout.isatty() else 160)
    settings = demo_settings(workdir)
    configure_logging(settings.log_level, as_json=False)
    started = time.perf_counter()
    running = start_server(settings, ["all"], port)
    context = DemoContext(
        tf=Tutorforge.from_settings(running.runtime.settings),
        address=running.address,
        settings=running.runtime.settings,
        workdir=workdir.resolve(),
        console=console,
    )
    console.print(f"[bold]tutorforge demo[/] — services {', '.join(running.services)} on {running.address}, store {settings.store}")
    try:
        for title, stage in STAGES[:stages_to_run]:
            console.print(Rule(f"[bold cyan]{title}"))
            stage_started = time.perf_counter()
            stage(context)
            console.print(f"[dim]{title}: {time.perf_counter() - stage_started:.1f} s[/]")
    finally:
        context.tf.close()
        running.stop(grace=5)
    console.print(Rule(f"[bold green]demo finished in {time.perf_counter() - started:.0f} s"))
    return context
