"""Run a PipelineSpec through the SDK: each section becomes its stage, in order, each stage's typed
result feeding the next."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from rich.console import Console

from tutorforge import samples
from tutorforge.client import Tutorforge, document_source, file_source, seed_source, synthetic_source
from tutorforge.core.cli_support import follow_job
from tutorforge.pipeline import stages
from tutorforge.pipeline.results import DatasetResult, PipelineResult
from tutorforge.pipeline.spec import THIS_ADAPTER, THIS_PROGRAM, DatasetSpec, PipelineSpec
from tutorforge.v1 import common_pb2, datasets_pb2

_BUNDLED = {"benchmark": samples.benchmark_turns, "evaluation": samples.evaluation_items}


def _sources(spec: PipelineSpec, dataset: DatasetSpec) -> list[datasets_pb2.DatasetSource]:
    sources = []
    for source in dataset.sources:
        if source.file is not None:
            sources.append(file_source(spec.path(source.file)))
        elif source.seeds is not None:
            seeds = source.seeds
            sources.append(seed_source(*spec.files(seeds.files, "seeds.files"), bundled=seeds.bundled,
                                       dialogues_per_card=seeds.dialogues_per_card, seed=seeds.seed))
        elif source.synthetic is not None:
            sources.append(synthetic_source(**source.synthetic.model_dump()))
        else:
            sources.append(document_source(**source.documents.model_dump()))
    return sources


def run_spec(spec: PipelineSpec, tf: Tutorforge, console: Console | None = None, quiet: bool = False) -> PipelineResult:
    """Run every section of `spec` on the services behind `tf`; returns what each stage produced."""
    console = console or Console(stderr=True, quiet=quiet)
    result = PipelineResult()

    def follow(label: str, metric: str = "") -> Callable[[Iterator[common_pb2.JobEvent]], None]:
        return lambda events: follow_job(events, label=label, metric=metric, out=console, quiet=quiet)

    if spec.material:
        documents = (stages.sample_documents() if spec.material.bundled else []) + spec.files(spec.material.paths, "material.paths")
        result.material = stages.ingest(tf, documents, category=spec.material.category, topic=spec.material.topic,
                                        chunk_size_tokens=spec.material.chunk_size_tokens,
                                        chunk_overlap_tokens=spec.material.chunk_overlap_tokens)
        console.print(f"material: {result.material.documents} documents, {result.material.chunks_written} chunks written"
                      + (f", failed: {', '.join(result.material.failed)}" if result.material.failed else ""))
    if spec.dataset:
        dataset = spec.dataset
        if dataset.sources:
            against = [_BUNDLED[item]() if item in _BUNDLED else spec.path(item) for item in dataset.decontaminate_against]
            result.dataset = stages.build_dataset(
                tf, dataset.name, _sources(spec, dataset), options=dataset.options, decontaminate_against=against,
                description=dataset.description, on_event=None if quiet else lambda e: console.print(f"  [dim]{e.progress:4.0%}[/] {e.message}"),
            )
        else:
            version = tf.datasets.get(dataset.name, dataset.version)
            result.dataset = DatasetResult(version)
        stats = result.dataset.dataset.stats
        console.print(f"dataset: {result.dataset.reference}, {stats.train_records} train / {stats.validation_records} validation records")
    if spec.train:
        train = spec.train
        result.training = stages.train(tf, result.dataset, train.adapter, num_workers=train.num_workers, lora=train.lora or None,
                                       metadata=train.metadata, watch=follow("train", "loss"), **train.arguments)
        metrics = result.training.metrics
        console.print(f"adapter: {result.training.adapter}@{result.training.adapter_version}, loss "
                      f"{metrics.get('initial_loss', float('nan')):.3f} → {metrics.get('final_loss', float('nan')):.3f}")
    if spec.optimize:
        optimize = spec.optimize
        result.program = stages.optimize(
            tf, optimize.program, result.dataset, adapter=result.adapter, optimizer=optimize.optimizer, metric=optimize.metric,
            budget=optimize.budget or None, max_tokens=optimize.max_tokens, seed=optimize.seed,
            frequency_penalties=optimize.frequency_penalties, watch=follow("optimize", "best_score"),
        )
        info = result.program.program
        console.print(f"program: {result.program.reference}, validation score {info.baseline_score:.3f} → {info.optimized_score:.3f}")
    if spec.evaluate:
        evaluate = spec.evaluate
        chosen = {THIS_ADAPTER: f"adapter:{result.adapter}", THIS_PROGRAM: f"program:{result.program.name}" if result.program else ""}
        targets = [chosen.get(target, target) for target in evaluate.targets]
        result.evaluation = stages.evaluate(
            tf, targets, dataset=None if evaluate.evaluation_set else result.dataset, evaluation_set=evaluate.evaluation_set,
            folder=Path(evaluate.report_dir) if evaluate.report_dir else None, max_examples=evaluate.max_examples,
            max_tokens=evaluate.max_tokens, threads=evaluate.threads, watch=follow("evaluate"),
        )
        for target in result.evaluation.report.targets:
            console.print(f"evaluation {result.evaluation.evaluation_id}: {target.target} pedagogical score {target.pedagogical_score:.3f}"
                          f" [{target.intervals['pedagogical_score'].low:.3f}–{target.intervals['pedagogical_score'].high:.3f}]")
    if spec.publish:
        publish = spec.publish
        result.publish = stages.publish(
            tf, adapter=result.adapter if publish.load_adapter else "",
            program=result.program.reference if publish.promote_program else "", force=publish.force,
        )
        if result.publish.adapter:
            console.print(f"published: adapter {result.publish.adapter.name}@{result.publish.adapter.version} loaded")
        if result.publish.program:
            console.print(f"published: program {result.publish.program.program.name}@{result.publish.program.program.version} "
                          f"served ({result.publish.program.reason})")
    return result


def as_dict(value: Any) -> Any:
    """A PipelineResult (or any part of it) as JSON-ready data."""
    if isinstance(value, Message):
        return MessageToDict(value, preserving_proto_field_name=True)
    if dataclasses.is_dataclass(value):
        # Derived names (a result's name, version, reference) are part of what it reports.
        names = [f.name for f in dataclasses.fields(value)]
        names += [n for n, attr in vars(type(value)).items() if isinstance(attr, property)]
        return {name: as_dict(getattr(value, name)) for name in names}
    if isinstance(value, (list, tuple)):
        return [as_dict(item) for item in value]
    if isinstance(value, dict):
        return {key: as_dict(item) for key, item in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value
