"""The pipeline's stages, each one composition of SDK calls returning its typed result. They print
nothing: the demo and `tutorforge pipeline run` render what they return, and follow jobs through
`on_event` or `watch`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from tutorforge.client import Document, JobHandle, Tutorforge
from tutorforge.pipeline.results import (
    ChatTurn,
    DatasetResult,
    EvaluationResult,
    MaterialResult,
    ProgramResult,
    PublishResult,
    TrainingResult,
)
from tutorforge.samples import material_documents
from tutorforge.v1 import common_pb2, datasets_pb2, inference_pb2
from tutorforge.v1 import retrieval_pb2 as retrieval_pb

OnEvent = Callable[[common_pb2.JobEvent], None] | None
Watch = Callable[[Iterator[common_pb2.JobEvent]], Any] | None


def _finish(handle: JobHandle, watch: Watch) -> common_pb2.Job:
    """Follow a job to its end, through `watch(events)` when given (a progress bar); JobFailed unless it succeeded."""
    if watch is None:
        return handle.wait()
    watch(handle.watch())
    return handle.finished()


def sample_documents() -> list[Document]:
    """The bundled teaching material, each document under its manifest metadata."""
    return [
        Document(path=d.path, document_id=d.document_id, source=d.source, category=d.category, topic=d.topic, extra=d.extra)
        for d in material_documents()
    ]


def ingest(tf: Tutorforge, documents: Iterable[Document | str | Path], **metadata: Any) -> MaterialResult:
    started = time.perf_counter()
    response = tf.retrieval.ingest(list(documents), **metadata)
    failed = tuple(r.document_id for r in response.results if r.outcome == retrieval_pb.INGEST_OUTCOME_FAILED)
    return MaterialResult(
        documents=len(response.results),
        chunks_written=sum(r.chunks_written for r in response.results),
        failed=failed,
        seconds=time.perf_counter() - started,
        results=tuple(response.results),
    )


def build_dataset(
    tf: Tutorforge,
    name: str,
    sources: list[datasets_pb2.DatasetSource],
    *,
    options: Mapping[str, Any] | None = None,
    decontaminate_against: Iterable[str | Path] = (),
    description: str = "",
    on_event: OnEvent = None,
) -> DatasetResult:
    job = tf.datasets.build(name, sources, options=options, decontaminate_against=decontaminate_against, description=description)
    version = job.wait(on_event=on_event).result
    return DatasetResult(tf.datasets.get(name, version))


def train(
    tf: Tutorforge, dataset: DatasetResult, adapter_name: str, *, watch: Watch = None, **options: Any
) -> TrainingResult:
    """A LoRA run on the dataset version; `watch(events)` consumes the job's events while it runs."""
    handle = tf.training.train(dataset.name, adapter_name, dataset_version=dataset.version, **options)
    job = _finish(handle, watch)
    return TrainingResult(job_id=job.id, adapter=job.result, adapter_version=job.labels["adapter_version"], metrics=dict(job.metrics))


def chat(
    tf: Tutorforge,
    turns: Iterable[str],
    *,
    adapter: str = "",
    max_tokens: int = 0,
    on_question: Callable[[str], None] | None = None,
    on_token: Callable[[str], None] | None = None,
    on_answer: Callable[[ChatTurn], None] | None = None,
) -> list[ChatTurn]:
    """One conversation, the student's turns in order, each reply streamed (retrieval on with the tutor's
    calibrated defaults) and kept as history; the base model answers if the adapter is unusable."""
    history: list[tuple[str, str]] = []
    answered = []
    for question in turns:
        if on_question is not None:
            on_question(question)
        history.append(("user", question))
        reply, citations, summary = [], [], inference_pb2.GenerationSummary()
        for event in tf.inference.chat_stream(history, adapter=adapter, fallback_to_base=True, max_tokens=max_tokens):
            kind = event.WhichOneof("event")
            if kind == "citations":
                citations = list(event.citations.citations)
            elif kind == "token":
                reply.append(event.token.text)
                if on_token is not None:
                    on_token(event.token.text)
            else:
                summary = event.summary
        answered.append(ChatTurn(question=question, reply="".join(reply), citations=tuple(citations), summary=summary))
        if on_answer is not None:
            on_answer(answered[-1])
        history.append(("assistant", answered[-1].reply))
    return answered


def optimize(
    tf: Tutorforge, name: str, dataset: DatasetResult, *, adapter: str = "", watch: Watch = None, **options: Any
) -> ProgramResult:
    handle = tf.optimization.optimize(name, dataset.name, dataset_version=dataset.version, adapter=adapter, **options)
    program_name, _, version = _finish(handle, watch).result.partition("@")
    return ProgramResult(tf.optimization.get_program(program_name, version).program)


def evaluate(
    tf: Tutorforge,
    targets: list[str],
    *,
    dataset: DatasetResult | None = None,
    evaluation_set: str = "",
    folder: Path | None = None,
    watch: Watch = None,
    **options: Any,
) -> EvaluationResult:
    """Evaluate targets on the dataset's validation split (or a bundled set); copy the report into `folder`."""
    handle = tf.optimization.evaluate(
        targets, dataset=dataset.name if dataset else "", dataset_version=dataset.version if dataset else "",
        evaluation_set=evaluation_set, **options,
    )
    evaluation_id = _finish(handle, watch).result
    response = tf.optimization.get_evaluation(evaluation_id, include_files=folder is not None)
    written = []
    for file in response.files:
        path = folder / file.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(file.content)
        written.append(path)
    return EvaluationResult(evaluation_id=evaluation_id, report=response.report, files=tuple(written))


def publish(tf: Tutorforge, *, adapter: str = "", program: str = "", force: bool = False) -> PublishResult:
    """Load the adapter into the serving engine and promote the program (if it beats the served one, or forced)."""
    return PublishResult(
        adapter=tf.inference.load_adapter(adapter) if adapter else None,
        program=tf.optimization.promote(program, force=force) if program else None,
    )

