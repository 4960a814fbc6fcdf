"""Demo stage: build a dataset from the starter dialogues, instructions and scenarios, a few chunks of the
ingested material and one synthetic conversation; show its stats and every dropped record."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from tutorforge import samples
from tutorforge.v1 import common_pb2, datasets_pb2, datasets_pb2_grpc, inference_pb2, retrieval_pb2

if TYPE_CHECKING:
    from tutorforge.demo import DemoContext

TITLE = "Datasets: starter dialogues + instructions + scenarios + grounded + synthetic"
DATASET = "demo-socratic"
# Small on purpose: generation on 2 CPU cores runs at a few tokens per second.
DOCUMENT_CHUNKS = 2
SYNTHETIC_CONVERSATIONS = 1
SYNTHETIC_MAX_TOKENS = 192


def _file(path: Path) -> datasets_pb2.RecordFile:
    return datasets_pb2.RecordFile(filename=path.name, content=path.read_bytes())


def run(context: DemoContext) -> None:
    stub = datasets_pb2_grpc.DatasetServiceStub(context.channel)
    files = [samples.starter_dialogues(), samples.instructions(), samples.teacher_scenarios()]
    sources = [datasets_pb2.DatasetSource(file=_file(path)) for path in files if path.exists()]
    sources.append(datasets_pb2.DatasetSource(documents=datasets_pb2.DocumentSource(
        filters=[retrieval_pb2.MetadataFilter(field="topic", equals="fractions")],
        max_chunks=DOCUMENT_CHUNKS,
        exchanges=1,
    )))
    sources.append(datasets_pb2.DatasetSource(synthetic=datasets_pb2.SyntheticSource(
        topic="fractions", num_conversations=SYNTHETIC_CONVERSATIONS, num_exchanges=1,
        model=inference_pb2.ModelSelection(), parameters=inference_pb2.GenerationParameters(max_tokens=SYNTHETIC_MAX_TOKENS),
    )))
    options = datasets_pb2.BuildOptions(seed=0, decontaminate_against=[_file(samples.evaluation_items())])
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
    table = Table("source", "read", "kept")
    for source in version.manifest.sources:
        table.add_row(source.source, str(source.records_read), str(source.records_kept))
    context.console.print(table)
    if version.manifest.dropped:
        dropped = Table("source", "index", "reason", title="dropped records")
        for record in version.manifest.dropped:
            dropped.add_row(record.source, str(record.index), record.reason)
        context.console.print(dropped)
    context.results["dataset"] = DATASET
