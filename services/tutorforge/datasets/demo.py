"""Demo stage: build the tutor training set — Socratic dialogues composed from the bundled lesson cards,
grounded on the passages chat retrieves, plus the starter dialogues and one synthetic conversation
(structured decoding) — decontaminated against the tutor benchmark; show its stats and what was dropped."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from tutorforge import samples
from tutorforge.v1 import common_pb2, datasets_pb2, datasets_pb2_grpc, inference_pb2

if TYPE_CHECKING:
    from tutorforge.demo import DemoContext

TITLE = "Datasets: lesson cards + starter dialogues + synthetic, decontaminated against the benchmark"
DATASET = "demo-socratic"
# Small on purpose: generation on 2 CPU cores runs at a few tokens per second.
SYNTHETIC_CONVERSATIONS = 1
SYNTHETIC_MAX_TOKENS = 192
# A tenth of ~580 records: the report's evaluation needs at least 20 validation turns.
VALIDATION_FRACTION = 0.1


def _file(path: Path) -> datasets_pb2.RecordFile:
    return datasets_pb2.RecordFile(filename=path.name, content=path.read_bytes())


def run(context: DemoContext) -> None:
    stub = datasets_pb2_grpc.DatasetServiceStub(context.channel)
    # Only Socratic student-tutor dialogues: the instruction and teacher-scenario samples model other
    # replies (explanations, advice to teachers) that the tutor should not learn to give.
    sources = [
        datasets_pb2.DatasetSource(seeds=datasets_pb2.SeedSource(bundled=True)),
        datasets_pb2.DatasetSource(file=_file(samples.starter_dialogues())),
    ]
    sources.append(datasets_pb2.DatasetSource(synthetic=datasets_pb2.SyntheticSource(
        topic="fractions", num_conversations=SYNTHETIC_CONVERSATIONS, num_exchanges=1,
        model=inference_pb2.ModelSelection(), parameters=inference_pb2.GenerationParameters(max_tokens=SYNTHETIC_MAX_TOKENS),
    )))
    options = datasets_pb2.BuildOptions(
        seed=0,
        validation_fraction=VALIDATION_FRACTION,
        decontaminate_against=[_file(samples.evaluation_items()), _file(samples.benchmark_turns())],
    )
    job = stub.CreateDataset(datasets_pb2.CreateDatasetRequest(
        name=DATASET, sources=sources, options=options, description="tutorforge demo dataset"
    )).job
    for response in stub.WatchDatasetJob(datasets_pb2.WatchDatasetJobRequest(job_id=job.id)):
        event = response.event
        context.console.print(f"  [dim]{event.progress:4.0%}[/] {event.message}")
    job = stub.GetDatasetJob(datasets_pb2.GetDatasetJobRequest(job_id=job.id)).job
    if job.state != common_pb2.JOB_STATE_SUCCEEDED:
        raise RuntimeError(f"dataset build failed: {job.error or job.message}")
    version = stub.GetDataset(datasets_pb2.GetDatasetRequest(name=DATASET, version=job.result)).dataset
    stats = version.stats
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
    context.results["dataset"] = DATASET
