"""gRPC DatasetService: proto ⇄ domain translation only; the work happens in `service` and `builder`."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc

from tutorforge.artifacts.datasets import SPLITS, DatasetInfo
from tutorforge.client.inference import InferenceClient
from tutorforge.client.retrieval import RetrievalClient
from tutorforge.core.convert import job_to_proto
from tutorforge.core.errors import InvalidArgument
from tutorforge.core.job_api import JobServicer
from tutorforge.core.runtime import Runtime
from tutorforge.core.teaching import RetrievalOptions, chat_retrieval
from tutorforge.datasets.builder import BuildOptions, BuildRequest, EvaluationFile, FileSource, Source
from tutorforge.datasets.formats import RecordFormat
from tutorforge.datasets.generation import DEFAULT_MIN_FAITHFULNESS, DocumentSource, SyntheticSource
from tutorforge.datasets.seeds import seed_sources
from tutorforge.datasets.service import DatasetService
from tutorforge.datasets.teacher import open_teacher
from tutorforge.datasets.validation import DEFAULT_MAX_TOKENS
from tutorforge.v1 import datasets_pb2, datasets_pb2_grpc

SERVICE_NAME = "tutorforge.v1.DatasetService"
_FORMATS = {
    datasets_pb2.RECORD_FORMAT_UNSPECIFIED: None,
    datasets_pb2.RECORD_FORMAT_CHATML: RecordFormat.CHATML,
    datasets_pb2.RECORD_FORMAT_OPENAI: RecordFormat.OPENAI,
    datasets_pb2.RECORD_FORMAT_INSTRUCTION: RecordFormat.INSTRUCTION,
    datasets_pb2.RECORD_FORMAT_SCENARIO: RecordFormat.SCENARIO,
}
_FORMAT_TO_PROTO = {value.value: key for key, value in _FORMATS.items() if value}
_SPLITS = {
    datasets_pb2.DATASET_SPLIT_UNSPECIFIED: SPLITS,
    datasets_pb2.DATASET_SPLIT_TRAIN: ("train",),
    datasets_pb2.DATASET_SPLIT_VALIDATION: ("validation",),
}
def version_to_proto(info: DatasetInfo) -> datasets_pb2.DatasetVersion:
    stats = info.stats
    manifest = info.manifest
    return datasets_pb2.DatasetVersion(
        name=info.name,
        version=info.version,
        content_hash=info.content_hash,
        created_at_unix=int(info.created_at),
        description=info.description,
        stats=datasets_pb2.DatasetStats(
            records=stats.get("records", 0),
            train_records=stats.get("train_records", 0),
            validation_records=stats.get("validation_records", 0),
            turns=stats.get("turns", 0),
            token_length_histogram=[datasets_pb2.HistogramBucket(**bucket) for bucket in stats.get("token_length_histogram", [])],
            records_per_subject=stats.get("records_per_subject", {}),
            question_rate=stats.get("question_rate", 0.0),
            answer_reveal_rate=stats.get("answer_reveal_rate", 0.0),
            mean_tokens=stats.get("mean_tokens", 0.0),
        ),
        manifest=datasets_pb2.DatasetManifest(
            sources=[
                datasets_pb2.SourceSummary(
                    source=summary["source"],
                    format=_FORMAT_TO_PROTO.get(summary["format"], datasets_pb2.RECORD_FORMAT_UNSPECIFIED),
                    records_read=summary["records_read"],
                    records_kept=summary["kept"],
                    records_dropped=summary.get("dropped", 0),
                    dropped_by_reason=summary.get("dropped_by_reason", {}),
                )
                for summary in manifest.get("sources", [])
            ],
            dropped=[
                datasets_pb2.DroppedRecord(source=d["source"], index=d["index"], reason=d["reason"])
                for d in manifest.get("dropped", [])
            ],
            dropped_by_reason=manifest.get("dropped_by_reason", {}),
            parameters_json=json.dumps(manifest.get("parameters", {}), sort_keys=True),
            tokenizer=manifest.get("tokenizer", ""),
        ),
    )


class DatasetServicer(JobServicer, datasets_pb2_grpc.DatasetServiceServicer):
    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.service = DatasetService(runtime.store, runtime.settings)
        self.job_directory = self.service.job_directory

    def _file(self, file: datasets_pb2.RecordFile) -> FileSource:
        if not file.filename:
            raise InvalidArgument("every record file needs a filename (used to name dropped records)")
        return FileSource(file.filename, file.content, _FORMATS[file.format])

    def _source(self, source: datasets_pb2.DatasetSource) -> Source:
        kind = source.WhichOneof("source")
        if kind == "file":
            return self._file(source.file)
        if kind == "synthetic":
            synthetic = source.synthetic
            return SyntheticSource(
                inference=InferenceClient(self.runtime.connection("inference")),
                topic=synthetic.topic,
                num_conversations=synthetic.num_conversations,
                num_exchanges=synthetic.num_exchanges,
                model=synthetic.model,
                generation=synthetic.parameters,
                teacher=open_teacher(self.runtime.settings, synthetic.teacher, "synthetic.teacher"),
            )
        if kind == "documents":
            documents = source.documents
            return DocumentSource(
                retrieval=RetrievalClient(self.runtime.connection("retrieval")),
                inference=InferenceClient(self.runtime.connection("inference")),
                filters=list(documents.filters),
                max_chunks=documents.max_chunks,
                exchanges=documents.exchanges,
                model=documents.model,
                min_faithfulness=documents.min_faithfulness if documents.HasField("min_faithfulness") else DEFAULT_MIN_FAITHFULNESS,
                teacher=open_teacher(self.runtime.settings, documents.teacher, "documents.teacher"),
            )
        raise InvalidArgument("a dataset source must set one of file, documents, synthetic or seeds")

    def _sources(self, source: datasets_pb2.DatasetSource) -> list[Source]:
        """Domain sources of one proto source: seeds give one per lesson-card file, accounted on its own."""
        if source.WhichOneof("source") != "seeds":
            return [self._source(source)]
        seeds = source.seeds
        return seed_sources(
            RetrievalClient(self.runtime.connection("retrieval")),
            [(file.filename, file.content) for file in seeds.files],
            seeds.bundled,
            seeds.dialogues_per_card,
            seeds.seed,
            chat_retrieval(RetrievalOptions(enabled=True), self.runtime.settings.inference),
        )

    @staticmethod
    def _options(options: datasets_pb2.BuildOptions) -> BuildOptions:
        defaults = BuildOptions()
        return BuildOptions(
            max_tokens=options.max_tokens or DEFAULT_MAX_TOKENS,
            strict=options.strict,
            near_duplicate_threshold=options.near_duplicate_threshold
            if options.HasField("near_duplicate_threshold") else defaults.near_duplicate_threshold,
            validation_fraction=options.validation_fraction
            if options.HasField("validation_fraction") else defaults.validation_fraction,
            seed=options.seed,
            decontamination_ngram=options.decontamination_ngram or defaults.decontamination_ngram,
            min_question_rate=options.min_question_rate if options.HasField("min_question_rate") else None,
            drop_answer_revealing=options.drop_answer_revealing,
        ).check()

    def CreateDataset(self, request: datasets_pb2.CreateDatasetRequest, context: grpc.ServicerContext) -> datasets_pb2.CreateDatasetResponse:
        job = self.service.create(BuildRequest(
            name=request.name,
            sources=[built for source in request.sources for built in self._sources(source)],
            options=self._options(request.options),
            description=request.description,
            evaluation=[EvaluationFile(f.filename or "evaluation", f.content) for f in request.options.decontaminate_against],
        ))
        return datasets_pb2.CreateDatasetResponse(job=job_to_proto(job))

    def GetDataset(self, request: datasets_pb2.GetDatasetRequest, context: grpc.ServicerContext) -> datasets_pb2.GetDatasetResponse:
        return datasets_pb2.GetDatasetResponse(dataset=version_to_proto(self.service.repository.get(request.name, request.version)))

    def ListDatasets(self, request: datasets_pb2.ListDatasetsRequest, context: grpc.ServicerContext) -> datasets_pb2.ListDatasetsResponse:
        page, next_token = self.service.list_page(request.page_size, request.page_token)
        return datasets_pb2.ListDatasetsResponse(datasets=[version_to_proto(info) for info in page], next_page_token=next_token)

    def ExportDataset(self, request: datasets_pb2.ExportDatasetRequest, context: grpc.ServicerContext) -> Iterator[datasets_pb2.ExportDatasetResponse]:
        lines = self.service.export(
            request.name, request.version, _SPLITS[request.split], request.format == datasets_pb2.EXPORT_FORMAT_OPENAI
        )
        for line in lines:
            yield datasets_pb2.ExportDatasetResponse(line=line)

    def DeleteDataset(self, request: datasets_pb2.DeleteDatasetRequest, context: grpc.ServicerContext) -> datasets_pb2.DeleteDatasetResponse:
        return datasets_pb2.DeleteDatasetResponse(deleted_versions=self.service.repository.delete(request.name, request.version))

    def ValidateRecords(self, request: datasets_pb2.ValidateRecordsRequest, context: grpc.ServicerContext) -> datasets_pb2.ValidateRecordsResponse:
        files = [self._file(file) for file in request.files]
        report = self.service.validate(files, request.max_tokens or DEFAULT_MAX_TOKENS)
        return datasets_pb2.ValidateRecordsResponse(
            valid=report.valid,
            invalid=report.invalid,
            issues=[datasets_pb2.RecordIssue(source=p.source, index=p.index, reason=p.reason) for p in report.problems],
        )


def register(server: grpc.Server, runtime: Runtime) -> str:
    servicer = DatasetServicer(runtime)
    servicer.service.recover_interrupted()
    runtime.on_shutdown(servicer.service.jobs.stop)
    datasets_pb2_grpc.add_DatasetServiceServicer_to_server(servicer, server)
    return SERVICE_NAME
