"""DatasetsClient: build versioned tutoring datasets from files, lesson cards, documents and generation."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from tutorforge.client.connection import Connection
from tutorforge.client.convert import enum_value, message
from tutorforge.client.jobs import JobClient, JobHandle
from tutorforge.client.retrieval import filters_of
from tutorforge.core.errors import InvalidArgument
from tutorforge.v1 import datasets_pb2 as pb
from tutorforge.v1 import datasets_pb2_grpc, inference_pb2


def record_file(path: str | Path, format: str | int = "unspecified") -> pb.RecordFile:
    """A file of records (JSON array or JSONL; format detected unless given: chatml, openai, instruction, scenario)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidArgument(f"file: {path} is not a readable file")
    return pb.RecordFile(filename=path.name, content=path.read_bytes(), format=enum_value(pb.RecordFormat, "RECORD_FORMAT_", format, "format"))


def file_source(path: str | Path, format: str | int = "unspecified") -> pb.DatasetSource:
    return pb.DatasetSource(file=record_file(path, format))


def seed_source(*files: str | Path, bundled: bool = False, dialogues_per_card: int = 0, seed: int = 0) -> pb.DatasetSource:
    """Dialogues composed from lesson cards: these files and/or the bundled cards."""
    return pb.DatasetSource(seeds=pb.SeedSource(
        files=[record_file(path) for path in files], bundled=bundled, dialogues_per_card=dialogues_per_card, seed=seed
    ))


def synthetic_source(
    topic: str, *, conversations: int = 1, exchanges: int = 1, max_tokens: int = 0, adapter: str = "", teacher: str = ""
) -> pb.DatasetSource:
    """Dialogues an LLM writes about `topic` (the platform's model unless `teacher` names an endpoint)."""
    return pb.DatasetSource(synthetic=pb.SyntheticSource(
        topic=topic, num_conversations=conversations, num_exchanges=exchanges,
        model=inference_pb2.ModelSelection(adapter=adapter), parameters=inference_pb2.GenerationParameters(max_tokens=max_tokens),
        teacher=teacher,
    ))


def document_source(
    filters: Mapping[str, Any] | None = None, *, max_chunks: int = 0, exchanges: int = 0, teacher: str = ""
) -> pb.DatasetSource:
    """Grounded dialogues generated from ingested chunks matching `filters`."""
    return pb.DatasetSource(documents=pb.DocumentSource(
        filters=filters_of(filters), max_chunks=max_chunks, exchanges=exchanges, teacher=teacher
    ))


class DatasetsClient(JobClient):
    def __init__(self, connection: Connection):
        super().__init__(connection, datasets_pb2_grpc.DatasetServiceStub(connection.channel))

    def build(
        self,
        name: str,
        sources: Iterable[pb.DatasetSource],
        *,
        options: pb.BuildOptions | Mapping[str, Any] | None = None,
        decontaminate_against: Iterable[str | Path] = (),
        description: str = "",
    ) -> JobHandle:
        """Start a build; `wait()` on the handle returns the job whose `result` is the new version.
        `options` are BuildOptions fields (seed, validation_fraction, max_tokens, ...)."""
        built = message(pb.BuildOptions, options, "options") or pb.BuildOptions()
        built.decontaminate_against.extend(record_file(path) for path in decontaminate_against)
        request = pb.CreateDatasetRequest(name=name, sources=list(sources), options=built, description=description)
        return self.job(self.connection.unary(self.stub.CreateDataset, request, "start").job)

    def get(self, name: str, version: str = "") -> pb.DatasetVersion:
        """A version (default the latest) with its stats and manifest."""
        return self.connection.unary(self.stub.GetDataset, pb.GetDatasetRequest(name=name, version=version), "read").dataset

    def list(self, page_size: int = 100) -> Iterator[pb.DatasetVersion]:
        pages = self.connection.pages(self.stub.ListDatasets, lambda token: pb.ListDatasetsRequest(page_size=page_size, page_token=token))
        return (dataset for page in pages for dataset in page.datasets)

    def export(self, name: str, version: str = "", split: str | int = "unspecified", format: str | int = "chatml") -> Iterator[str]:
        """The records as JSON lines (split: train, validation or unspecified = all)."""
        request = pb.ExportDatasetRequest(
            name=name, version=version,
            split=enum_value(pb.DatasetSplit, "DATASET_SPLIT_", split, "split"),
            format=enum_value(pb.ExportFormat, "EXPORT_FORMAT_", format, "format"),
        )
        return (reply.line for reply in self.connection.stream(self.stub.ExportDataset, request, "read"))

    def delete(self, name: str, version: str = "") -> list[str]:
        """Deletes a version (default every version); returns the deleted versions."""
        request = pb.DeleteDatasetRequest(name=name, version=version)
        return list(self.connection.unary(self.stub.DeleteDataset, request, "write").deleted_versions)

    def validate(self, *files: str | Path, max_tokens: int = 0) -> pb.ValidateRecordsResponse:
        """Dry run: parse and validate record files, storing nothing."""
        request = pb.ValidateRecordsRequest(files=[record_file(path) for path in files], max_tokens=max_tokens)
        return self.connection.unary(self.stub.ValidateRecords, request, "read")
