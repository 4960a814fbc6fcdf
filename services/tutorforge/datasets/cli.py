"""`tutorforge dataset …`: build, inspect, export and validate datasets on a running server."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from tutorforge.client import DatasetsClient, record_file
from tutorforge.core.cli_support import (
    DEFAULT_ADDRESS,
    AddressOption,
    JsonOption,
    connect,
    console,
    err_console,
    follow_and_get,
    job_state_label,
    print_json,
    rpc_errors,
    to_dict,
)
from tutorforge.v1 import common_pb2, datasets_pb2, inference_pb2, retrieval_pb2

dataset_app = typer.Typer(name="dataset", help="Build, inspect, export and validate Socratic tutoring datasets.", no_args_is_help=True)

_SPLITS = {"all": datasets_pb2.DATASET_SPLIT_UNSPECIFIED, "train": datasets_pb2.DATASET_SPLIT_TRAIN,
           "validation": datasets_pb2.DATASET_SPLIT_VALIDATION}
_EXPORT_FORMATS = {"chatml": datasets_pb2.EXPORT_FORMAT_CHATML, "openai": datasets_pb2.EXPORT_FORMAT_OPENAI}
VersionOption = Annotated[str, typer.Option("--version", help="Dataset version (default: the newest).")]


def _client(address: str) -> DatasetsClient:
    return connect(address).datasets


def _record_file(path: Path) -> datasets_pb2.RecordFile:
    with rpc_errors():  # a missing file exits as a refused call does, naming the file
        return record_file(path)


def parse_filters(expressions: list[str]) -> list[retrieval_pb2.MetadataFilter]:
    """`field=value` (equals) or `field=a|b` (any of); several joined by ',' or given repeatedly."""
    filters = []
    for expression in expressions:
        for part in filter(None, (piece.strip() for piece in expression.split(","))):
            field, sep, value = part.partition("=")
            if not sep or not field.strip() or not value.strip():
                raise typer.BadParameter(f"filter {part!r} must look like field=value or field=a|b (e.g. category=math)")
            values = [v.strip() for v in value.split("|") if v.strip()]
            if len(values) == 1:
                filters.append(retrieval_pb2.MetadataFilter(field=field.strip(), equals=values[0]))
            else:
                filters.append(retrieval_pb2.MetadataFilter(field=field.strip(), any_of=retrieval_pb2.StringList(values=values)))
    return filters


def _print_version(version: datasets_pb2.DatasetVersion) -> None:
    stats = version.stats
    console.print(f"[bold]{version.name}[/] version [cyan]{version.version}[/] — {version.description or 'no description'}")
    console.print(
        f"{stats.records} records ({stats.train_records} train / {stats.validation_records} validation), {stats.turns} turns, "
        f"mean {stats.mean_tokens:.0f} tokens; tutor asks a question in {stats.question_rate:.0%} of turns, "
        f"{stats.answer_reveal_rate:.0%} of records reveal an answer"
    )
    if stats.records_per_subject:
        console.print("subjects: " + ", ".join(f"{k} {v}" for k, v in sorted(stats.records_per_subject.items())))
    console.print("token lengths: " + ", ".join(f"≤{b.upper_bound}: {b.count}" for b in stats.token_length_histogram))
    sources = Table("source", "format", "read", "kept", "dropped", "why dropped", title="sources")
    for source in version.manifest.sources:
        name = datasets_pb2.RecordFormat.Name(source.format).removeprefix("RECORD_FORMAT_").lower()
        reasons = ", ".join(f"{kind} {count}" for kind, count in sorted(source.dropped_by_reason.items()))
        sources.add_row(source.source, "generated" if name == "unspecified" else name, str(source.records_read),
                        str(source.records_kept), str(source.records_dropped), reasons)
    console.print(sources)
    if version.manifest.dropped:
        dropped = Table("source", "index", "reason", title=f"{len(version.manifest.dropped)} dropped records")
        for record in version.manifest.dropped:
            dropped.add_row(record.source, str(record.index), record.reason)
        console.print(dropped)


@dataset_app.command()
def build(
    name: Annotated[str, typer.Argument(help="Dataset name: lowercase letters, digits, '.', '_', '-'.")],
    inputs: Annotated[Optional[list[Path]], typer.Option("--input", "-i", help="Record file (JSON or JSONL); repeat for more. The format is detected.")] = None,
    topic: Annotated[Optional[str], typer.Option(help="Generate synthetic dialogues about this topic ('general' = all subjects).")] = None,
    conversations: Annotated[int, typer.Option(help="Synthetic conversations to generate.")] = 4,
    exchanges: Annotated[int, typer.Option(help="Student/tutor exchanges per generated conversation.")] = 2,
    from_documents: Annotated[Optional[list[str]], typer.Option("--from-documents", help="Generate grounded dialogues from ingested chunks matching FILTER (field=value[,field=a|b]; 'all' for every document).")] = None,
    max_chunks: Annotated[int, typer.Option(help="Chunks to generate from with --from-documents.")] = 20,
    seeds: Annotated[Optional[list[Path]], typer.Option("--seeds", help="Lesson-card file (JSONL) to compose grounded Socratic dialogues from; repeat for more.")] = None,
    bundled_seeds: Annotated[bool, typer.Option("--bundled-seeds", help="Compose dialogues from the lesson cards bundled with tutorforge (8 subjects; ingest samples/material first).")] = False,
    dialogues_per_card: Annotated[int, typer.Option(help="Dialogues composed per lesson card with --seeds/--bundled-seeds (1..32).")] = 8,
    adapter: Annotated[str, typer.Option(help="Adapter that generates (default: the base model).")] = "",
    decontaminate: Annotated[Optional[list[Path]], typer.Option(help="Evaluation file whose n-grams must not appear in the dataset.")] = None,
    strict: Annotated[bool, typer.Option(help="Fail the build on any invalid record instead of dropping it.")] = False,
    max_tokens: Annotated[int, typer.Option(help="Token limit per record in the model's tokenizer.")] = 2048,
    near_duplicate_threshold: Annotated[float, typer.Option(help="MinHash Jaccard threshold for near duplicates (1 = off).")] = 0.85,
    validation_fraction: Annotated[float, typer.Option(help="Share of records held out for validation.")] = 0.1,
    seed: Annotated[int, typer.Option(help="Seed of the train/validation split and of the lesson-card dialogues' wording.")] = 0,
    min_question_rate: Annotated[Optional[float], typer.Option(help="Keep records whose tutor asks a question at least this often (0..1).")] = None,
    drop_answer_revealing: Annotated[bool, typer.Option(help="Drop records where the tutor reveals a final answer.")] = False,
    description: Annotated[str, typer.Option(help="Free description stored with the version.")] = "",
    address: AddressOption = DEFAULT_ADDRESS,
    json_output: JsonOption = False,
) -> None:
    """Build a dataset version from files, synthetic generation and/or ingested documents."""
    model = inference_pb2.ModelSelection(adapter=adapter)
    sources = [datasets_pb2.DatasetSource(file=_record_file(path)) for path in inputs or []]
    if topic:
        sources.append(datasets_pb2.DatasetSource(synthetic=datasets_pb2.SyntheticSource(
            topic=topic, num_conversations=conversations, num_exchanges=exchanges, model=model)))
    for expression in from_documents or []:
        filters = [] if expression.strip() == "all" else parse_filters([expression])
        sources.append(datasets_pb2.DatasetSource(documents=datasets_pb2.DocumentSource(
            filters=filters, max_chunks=max_chunks, exchanges=exchanges, model=model)))
    if seeds or bundled_seeds:
        sources.append(datasets_pb2.DatasetSource(seeds=datasets_pb2.SeedSource(
            files=[_record_file(path) for path in seeds or []], bundled=bundled_seeds,
            dialogues_per_card=dialogues_per_card, seed=seed)))
    if not sources:
        raise typer.BadParameter("give at least one --input FILE, a --topic, --from-documents FILTER, --seeds FILE or --bundled-seeds")
    options = datasets_pb2.BuildOptions(
        max_tokens=max_tokens, strict=strict, near_duplicate_threshold=near_duplicate_threshold,
        validation_fraction=validation_fraction, seed=seed, drop_answer_revealing=drop_answer_revealing,
        decontaminate_against=[_record_file(path) for path in decontaminate or []],
    )
    if min_question_rate is not None:
        options.min_question_rate = min_question_rate
    client = _client(address)
    with rpc_errors():
        job = follow_and_get(client.build(name, sources, options=options, description=description))
        if job.state != common_pb2.JOB_STATE_SUCCEEDED:
            if json_output:
                print_json({"job": to_dict(job)})
            err_console.print(f"[bold red]build {job_state_label(job.state)}[/] {job.error or job.message}")
            raise typer.Exit(code=1)
        version = client.get(name, job.result)
    if json_output:
        print_json({"job": to_dict(job), "dataset": to_dict(version)})
    else:
        _print_version(version)


@dataset_app.command("list")
def list_datasets(address: AddressOption = DEFAULT_ADDRESS, json_output: JsonOption = False) -> None:
    """Every stored dataset version, newest first per dataset."""
    with rpc_errors():
        versions = list(_client(address).list(page_size=200))
    if json_output:
        print_json([to_dict(version) for version in versions])
        return
    table = Table("name", "version", "records", "train", "validation", "question rate", "description")
    for version in versions:
        stats = version.stats
        table.add_row(version.name, version.version, str(stats.records), str(stats.train_records),
                      str(stats.validation_records), f"{stats.question_rate:.0%}", version.description)
    console.print(table)


@dataset_app.command()
def show(
    name: str, version: VersionOption = "", address: AddressOption = DEFAULT_ADDRESS, json_output: JsonOption = False
) -> None:
    """Stats and manifest (sources, dropped records and why) of a dataset version."""
    with rpc_errors():
        found = _client(address).get(name, version)
    if json_output:
        print_json(found)
    else:
        _print_version(found)


@dataset_app.command()
def delete(
    name: str, version: VersionOption = "", address: AddressOption = DEFAULT_ADDRESS, json_output: JsonOption = False
) -> None:
    """Delete one version, or every version of the dataset."""
    with rpc_errors():
        deleted = _client(address).delete(name, version)
    if json_output:
        print_json({"deleted_versions": deleted})
    else:
        console.print(f"deleted {name} version(s) {', '.join(deleted)}")


@dataset_app.command()
def export(
    name: str,
    version: VersionOption = "",
    split: Annotated[str, typer.Option(help="train, validation or all.")] = "all",
    format: Annotated[str, typer.Option("--format", help="chatml ({\"conversations\"}) or openai ({\"messages\"}).")] = "chatml",
    address: AddressOption = DEFAULT_ADDRESS,
) -> None:
    """Write the records as JSONL on stdout."""
    if split not in _SPLITS:
        raise typer.BadParameter(f"--split must be one of {', '.join(_SPLITS)}")
    if format not in _EXPORT_FORMATS:
        raise typer.BadParameter(f"--format must be one of {', '.join(_EXPORT_FORMATS)}")
    with rpc_errors():
        for line in _client(address).export(name, version, split=_SPLITS[split], format=_EXPORT_FORMATS[format]):
            sys.stdout.write(line + "\n")


@dataset_app.command()
def validate(
    paths: Annotated[list[Path], typer.Argument(help="Record files (JSON or JSONL).")],
    max_tokens: Annotated[int, typer.Option(help="Token limit per record.")] = 2048,
    address: AddressOption = DEFAULT_ADDRESS,
    json_output: JsonOption = False,
) -> None:
    """Dry run: parse and validate records, store nothing. Exits 1 when a record is invalid."""
    with rpc_errors():
        result = _client(address).validate(*paths, max_tokens=max_tokens)
    if json_output:
        print_json(result)
    else:
        console.print(f"{result.valid} valid, {result.invalid} invalid")
        if result.issues:
            table = Table("source", "index", "reason")
            for issue in result.issues:
                table.add_row(issue.source, str(issue.index), issue.reason)
            console.print(table)
    if result.invalid:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    app.add_typer(dataset_app, name="dataset")
