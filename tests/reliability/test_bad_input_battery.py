"""The project's own battery of bad input: every case is a named probe of one RPC (or the HTTP door)
with one thing wrong. Each must answer a clear status (never INTERNAL/UNKNOWN, never HTTP 5xx) whose
message names what to fix, leave the artifact store untouched, and leave the server healthy."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import grpc
import httpx
import pytest
from tutorforge.v1 import common_pb2 as C
from tutorforge.v1 import datasets_pb2 as D
from tutorforge.v1 import inference_pb2 as I
from tutorforge.v1 import jobs_pb2 as J
from tutorforge.v1 import optimization_pb2 as O
from tutorforge.v1 import retrieval_pb2 as R
from tutorforge.v1 import training_pb2 as T

from tests.reliability.reliability_helpers import BROKEN, call, healthy, snapshot

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
NAN, INF = float("nan"), float("inf")
HUGE = "x" * 5_000  # over the 4096-character limit of short strings
DEEP = b"[" * 5_000 + b"]" * 5_000
CHATML = b'{"conversations": [{"role": "user", "content": "Why?"}, {"role": "assistant", "content": "What do you think?"}]}'


@dataclass
class Case:
    id: str
    method: str
    request: object
    names: str  # what the message must mention (case-insensitive)
    codes: tuple = (INVALID,)
    raw: bool = False
    extra: dict = field(default_factory=dict)


def _user(text: str = "Why is the sky blue?") -> list:
    return [C.ChatMessage(role="user", content=text)]


def _file(content: bytes, name: str = "a.jsonl", fmt: int = 0) -> D.RecordFile:
    return D.RecordFile(filename=name, content=content, format=fmt)


def _create(**options: object) -> D.CreateDatasetRequest:
    return D.CreateDatasetRequest(name="probe", sources=[D.DatasetSource(file=_file(CHATML))], options=D.BuildOptions(**options))


def _range(**bounds: float) -> R.MetadataFilter:
    return R.MetadataFilter(field="grade", range=R.NumericRange(**bounds))


def _ingest(*messages: R.IngestDocumentsRequest) -> list:
    return list(messages)


def _doc(**header: object) -> R.IngestDocumentsRequest:
    return R.IngestDocumentsRequest(document=R.DocumentHeader(**header))


def _bytes(data: bytes) -> R.IngestDocumentsRequest:
    return R.IngestDocumentsRequest(content=data)


def _train(**changes: object) -> T.StartTrainingRequest:
    request = T.StartTrainingRequest(dataset="probe", adapter_name="probe-adapter")
    for dotted, value in changes.items():
        target = request
        *parents, leaf = dotted.split("__")
        for part in parents:
            target = getattr(target, part)
        if isinstance(value, list):
            getattr(target, leaf).extend(value)
        else:
            setattr(target, leaf, value)
    return request


def _optimize(**fields: object) -> O.StartOptimizationRequest:
    return O.StartOptimizationRequest(**{"name": "probe", "dataset": "probe", **fields})


def _params(**fields: object) -> I.GenerationParameters:
    return I.GenerationParameters(**fields)


S, DS, IN, TR, OP = "RetrievalService/", "DatasetService/", "InferenceService/", "TrainingService/", "OptimizationService/"

GRPC_CASES = [
    # --- retrieval
    Case("search-query-empty", S + "Search", R.SearchRequest(query=""), "query"),
    Case("search-limit-negative", S + "Search", R.SearchRequest(query="q", limit=-1), "limit"),
    Case("search-limit-over-max", S + "Search", R.SearchRequest(query="q", limit=101), "limit"),
    Case("search-mode-unknown-enum", S + "Search", R.SearchRequest(query="q", mode=9), "mode"),
    Case("search-threshold-nan", S + "Search", R.SearchRequest(query="q", score_threshold=NAN), "score_threshold"),
    Case("search-threshold-inf", S + "Search", R.SearchRequest(query="q", score_threshold=INF), "score_threshold"),
    Case("search-range-gt-nan", S + "Search", R.SearchRequest(query="q", filters=[_range(gt=NAN)]), "range.gt"),
    Case("search-range-lte-minus-inf", S + "Search", R.SearchRequest(query="q", filters=[_range(lte=-INF)]), "range.lte"),
    Case("search-range-no-bound", S + "Search", R.SearchRequest(query="q", filters=[R.MetadataFilter(field="grade", range=R.NumericRange())]), "range"),
    Case("search-filter-no-condition", S + "Search", R.SearchRequest(query="q", filters=[R.MetadataFilter(field="topic")]), "filters[0]"),
    Case("search-filter-field-unknown", S + "Search", R.SearchRequest(query="q", filters=[R.MetadataFilter(field="nosuch", equals="x")]), "nosuch"),
    Case("search-filter-field-huge", S + "Search", R.SearchRequest(query="q", filters=[R.MetadataFilter(field=HUGE, equals="x")]), "field"),
    Case("search-filter-field-empty", S + "Search", R.SearchRequest(query="q", filters=[R.MetadataFilter(field="", equals="x")]), "field"),
    Case("search-query-over-text-limit", S + "Search", R.SearchRequest(query="q" * (4 * 1024 * 1024 + 1)), "query"),
    Case("search-filters-count-over-limit", S + "Search", R.SearchRequest(query="q", filters=[R.MetadataFilter(field="topic", equals="x")] * 10_001), "filters"),
    Case("search-any-of-value-huge", S + "Search", R.SearchRequest(query="q", filters=[R.MetadataFilter(field="topic", any_of=R.StringList(values=[HUGE]))]), "values"),
    Case("get-document-id-empty", S + "GetDocument", R.GetDocumentRequest(), "document_id"),
    Case("get-document-id-huge", S + "GetDocument", R.GetDocumentRequest(document_id=HUGE), "document_id"),
    Case("get-document-missing", S + "GetDocument", R.GetDocumentRequest(document_id="nosuch"), "nosuch", (NOT_FOUND,)),
    Case("list-documents-page-size-negative", S + "ListDocuments", R.ListDocumentsRequest(page_size=-1), "page_size"),
    Case("list-documents-page-size-huge", S + "ListDocuments", R.ListDocumentsRequest(page_size=2**31 - 1), "page_size"),
    Case("list-documents-filter-no-condition", S + "ListDocuments", R.ListDocumentsRequest(filters=[R.MetadataFilter(field="topic")]), "filters[0]"),
    Case("list-documents-page-token-huge", S + "ListDocuments", R.ListDocumentsRequest(page_token="9" * 5000), "page_token"),
    Case("list-documents-page-token-garbage", S + "ListDocuments", R.ListDocumentsRequest(page_token="../Not A Name"), "page_token"),
    Case("list-documents-filter-range-inf", S + "ListDocuments", R.ListDocumentsRequest(filters=[_range(gte=INF)]), "range.gte"),
    Case("delete-document-id-empty", S + "DeleteDocument", R.DeleteDocumentRequest(), "document_id"),
    Case("delete-document-missing", S + "DeleteDocument", R.DeleteDocumentRequest(document_id="nosuch"), "nosuch", (NOT_FOUND,)),
    Case("ingest-content-before-header", S + "IngestDocuments", _ingest(_bytes(b"text")), "header"),
    Case("ingest-options-after-document", S + "IngestDocuments", _ingest(_doc(filename="a.md"), _bytes(b"x"), R.IngestDocumentsRequest(options=R.ChunkingOptions())), "options"),
    Case("ingest-message-without-payload", S + "IngestDocuments", _ingest(R.IngestDocumentsRequest()), "payload"),
    Case("ingest-chunk-size-negative", S + "IngestDocuments", _ingest(R.IngestDocumentsRequest(options=R.ChunkingOptions(chunk_size_tokens=-5)), _doc(filename="a.md"), _bytes(b"x")), "chunk"),
    Case("ingest-overlap-over-size", S + "IngestDocuments", _ingest(R.IngestDocumentsRequest(options=R.ChunkingOptions(chunk_size_tokens=32, chunk_overlap_tokens=64)), _doc(filename="a.md"), _bytes(b"x")), "overlap"),
    Case("ingest-filename-huge", S + "IngestDocuments", _ingest(_doc(filename=HUGE + ".md"), _bytes(b"x")), "filename"),
    Case("ingest-document-id-traversal", S + "IngestDocuments", _ingest(_doc(document_id="../../etc/passwd", filename="a.md"), _bytes(b"x")), "document_id"),
    Case("ingest-metadata-extra-too-many", S + "IngestDocuments", _ingest(_doc(filename="a.md", metadata=R.DocumentMetadata(extra={f"k{i}": "v" for i in range(1001)})), _bytes(b"x")), "extra"),
    Case("ingest-metadata-value-huge", S + "IngestDocuments", _ingest(_doc(filename="a.md", metadata=R.DocumentMetadata(category=HUGE)), _bytes(b"x")), "category"),
    # --- datasets
    Case("create-dataset-name-empty", DS + "CreateDataset", D.CreateDatasetRequest(sources=[D.DatasetSource(file=_file(CHATML))]), "name"),
    Case("create-dataset-name-uppercase", DS + "CreateDataset", D.CreateDatasetRequest(name="Probe", sources=[D.DatasetSource(file=_file(CHATML))]), "name"),
    Case("create-dataset-name-traversal", DS + "CreateDataset", D.CreateDatasetRequest(name="../x", sources=[D.DatasetSource(file=_file(CHATML))]), "name"),
    Case("create-dataset-name-long-echo-cut", DS + "CreateDataset", D.CreateDatasetRequest(name="a" * 4000, sources=[D.DatasetSource(file=_file(CHATML))]), "name"),
    Case("create-dataset-no-sources", DS + "CreateDataset", D.CreateDatasetRequest(name="probe"), "source"),
    Case("create-dataset-source-unset", DS + "CreateDataset", D.CreateDatasetRequest(name="probe", sources=[D.DatasetSource()]), "source"),
    Case("create-dataset-file-no-filename", DS + "CreateDataset", D.CreateDatasetRequest(name="probe", sources=[D.DatasetSource(file=D.RecordFile(content=CHATML))]), "filename"),
    Case("create-dataset-file-format-unknown-enum", DS + "CreateDataset", D.CreateDatasetRequest(name="probe", sources=[D.DatasetSource(file=_file(CHATML, fmt=42))]), "format"),
    Case("create-dataset-file-not-utf8", DS + "CreateDataset", D.CreateDatasetRequest(name="probe", sources=[D.DatasetSource(file=_file(b"\xff\xfe\x00bad"))]), "a.jsonl"),
    Case("create-dataset-file-deep-json", DS + "CreateDataset", D.CreateDatasetRequest(name="probe", sources=[D.DatasetSource(file=_file(DEEP))]), "a.jsonl"),
    Case("create-dataset-file-deep-jsonl-line", DS + "CreateDataset", D.CreateDatasetRequest(name="probe", sources=[D.DatasetSource(file=_file(CHATML + b"\n" + b'{"a":' * 3000 + b"1" + b"}" * 3000))]), "a.jsonl"),
    Case("create-dataset-file-empty", DS + "CreateDataset", D.CreateDatasetRequest(name="probe", sources=[D.DatasetSource(file=_file(b""))]), "a.jsonl"),
    Case("create-dataset-max-tokens-negative", DS + "CreateDataset", _create(max_tokens=-1), "max_tokens"),
    Case("create-dataset-near-duplicate-nan", DS + "CreateDataset", _create(near_duplicate_threshold=NAN), "near_duplicate_threshold"),
    Case("create-dataset-near-duplicate-over-one", DS + "CreateDataset", _create(near_duplicate_threshold=2.0), "near_duplicate_threshold"),
    Case("create-dataset-validation-fraction-negative", DS + "CreateDataset", _create(validation_fraction=-0.5), "validation_fraction"),
    Case("create-dataset-validation-fraction-inf", DS + "CreateDataset", _create(validation_fraction=INF), "validation_fraction"),
    Case("create-dataset-decontamination-ngram-one", DS + "CreateDataset", _create(decontamination_ngram=1), "decontamination_ngram"),
    Case("create-dataset-decontaminate-malformed", DS + "CreateDataset", _create(decontaminate_against=[_file(b"[1, 2", "eval.json")]), "decontaminate_against"),
    Case("create-dataset-decontaminate-no-texts", DS + "CreateDataset", _create(decontaminate_against=[_file(b"[1, 2, 3]", "eval.json")]), "decontaminate_against"),
    Case("create-dataset-decontaminate-deep", DS + "CreateDataset", _create(decontaminate_against=[_file(DEEP, "eval.json")]), "decontaminate_against"),
    Case("create-dataset-min-question-rate-nan", DS + "CreateDataset", _create(min_question_rate=NAN), "min_question_rate"),
    Case("create-dataset-min-question-rate-over-one", DS + "CreateDataset", _create(min_question_rate=2.0), "min_question_rate"),
    Case("create-dataset-seeds-dialogues-per-card-99", DS + "CreateDataset", D.CreateDatasetRequest(name="probe", sources=[D.DatasetSource(seeds=D.SeedSource(bundled=True, dialogues_per_card=99))]), "dialogues_per_card"),
    Case("create-dataset-seeds-not-json", DS + "CreateDataset", D.CreateDatasetRequest(name="probe", sources=[D.DatasetSource(seeds=D.SeedSource(files=[_file(b"not json", "s.jsonl")]))]), "s.jsonl"),
    Case("create-dataset-seeds-deep-json", DS + "CreateDataset", D.CreateDatasetRequest(name="probe", sources=[D.DatasetSource(seeds=D.SeedSource(files=[_file(DEEP, "s.jsonl")]))]), "s.jsonl"),
    Case("create-dataset-seeds-none", DS + "CreateDataset", D.CreateDatasetRequest(name="probe", sources=[D.DatasetSource(seeds=D.SeedSource())]), "seeds"),
    Case("create-dataset-synthetic-conversations-negative", DS + "CreateDataset", D.CreateDatasetRequest(name="probe", sources=[D.DatasetSource(synthetic=D.SyntheticSource(topic="physics", num_conversations=-3))]), "num_conversations"),
    Case("create-dataset-synthetic-teacher-bad-url", DS + "CreateDataset", D.CreateDatasetRequest(name="probe", sources=[D.DatasetSource(synthetic=D.SyntheticSource(topic="physics", num_conversations=1, teacher="ftp://x y"))]), "teacher", (INVALID, PRECONDITION)),
    Case("create-dataset-synthetic-temperature-nan", DS + "CreateDataset", D.CreateDatasetRequest(name="probe", sources=[D.DatasetSource(synthetic=D.SyntheticSource(topic="physics", num_conversations=1, parameters=_params(temperature=NAN)))]), "temperature"),
    Case("create-dataset-documents-max-chunks-negative", DS + "CreateDataset", D.CreateDatasetRequest(name="probe", sources=[D.DatasetSource(documents=D.DocumentSource(max_chunks=-1))]), "max_chunks"),
    Case("create-dataset-documents-faithfulness-nan", DS + "CreateDataset", D.CreateDatasetRequest(name="probe", sources=[D.DatasetSource(documents=D.DocumentSource(min_faithfulness=NAN))]), "min_faithfulness"),
    Case("create-dataset-documents-filter-nan", DS + "CreateDataset", D.CreateDatasetRequest(name="probe", sources=[D.DatasetSource(documents=D.DocumentSource(filters=[_range(lt=NAN)]))]), "range.lt"),
    Case("create-dataset-description-over-limit", DS + "CreateDataset", D.CreateDatasetRequest(name="probe", description="d" * (4 * 1024 * 1024 + 1), sources=[D.DatasetSource(file=_file(CHATML))]), "description"),
    Case("get-dataset-job-id-empty", DS + "GetJob", J.GetJobRequest(), "job"),
    Case("get-dataset-job-missing", DS + "GetJob", J.GetJobRequest(job_id="nosuch"), "nosuch", (NOT_FOUND,)),
    Case("get-dataset-job-id-huge", DS + "GetJob", J.GetJobRequest(job_id=HUGE), "job_id"),
    Case("get-dataset-job-id-traversal", DS + "GetJob", J.GetJobRequest(job_id="../../x"), "job", (INVALID, NOT_FOUND)),
    Case("watch-dataset-job-missing", DS + "WatchJob", J.WatchJobRequest(job_id="nosuch"), "nosuch", (NOT_FOUND,)),
    Case("cancel-dataset-job-missing", DS + "CancelJob", J.CancelJobRequest(job_id="nosuch"), "nosuch", (NOT_FOUND,)),
    Case("list-dataset-jobs-kind-unknown", DS + "ListJobs", J.ListJobsRequest(kind="training"), "kind"),
    Case("list-dataset-jobs-page-token-garbage", DS + "ListJobs", J.ListJobsRequest(page_token="zz"), "page_token"),
    Case("get-dataset-missing", DS + "GetDataset", D.GetDatasetRequest(name="nosuch"), "nosuch", (NOT_FOUND,)),
    Case("get-dataset-version-traversal", DS + "GetDataset", D.GetDatasetRequest(name="nosuch", version="../v"), "version", (INVALID, NOT_FOUND)),
    Case("list-datasets-page-size-negative", DS + "ListDatasets", D.ListDatasetsRequest(page_size=-1), "page_size"),
    Case("list-datasets-page-token-garbage", DS + "ListDatasets", D.ListDatasetsRequest(page_token="zz"), "page_token"),
    Case("export-dataset-split-unknown-enum", DS + "ExportDataset", D.ExportDatasetRequest(name="probe", split=7), "split"),
    Case("export-dataset-format-unknown-enum", DS + "ExportDataset", D.ExportDatasetRequest(name="probe", format=-2), "format"),
    Case("export-dataset-missing", DS + "ExportDataset", D.ExportDatasetRequest(name="nosuch"), "nosuch", (NOT_FOUND,)),
    Case("delete-dataset-missing", DS + "DeleteDataset", D.DeleteDatasetRequest(name="nosuch"), "nosuch", (NOT_FOUND,)),
    Case("delete-dataset-name-bad", DS + "DeleteDataset", D.DeleteDatasetRequest(name="Bad Name"), "name"),
    Case("validate-records-max-tokens-negative", DS + "ValidateRecords", D.ValidateRecordsRequest(files=[_file(CHATML)], max_tokens=-4), "max_tokens"),
    Case("validate-records-format-unknown-enum", DS + "ValidateRecords", D.ValidateRecordsRequest(files=[_file(CHATML, fmt=99)]), "format"),
    Case("validate-records-deep-json", DS + "ValidateRecords", D.ValidateRecordsRequest(files=[_file(DEEP)]), "a.jsonl"),
    Case("validate-records-files-over-limit", DS + "ValidateRecords", D.ValidateRecordsRequest(files=[_file(b"{}")] * 10_001), "files"),
    Case("validate-records-no-filename", DS + "ValidateRecords", D.ValidateRecordsRequest(files=[D.RecordFile(content=CHATML)]), "filename"),
    # --- inference
    Case("generate-prompt-empty", IN + "Generate", I.GenerateRequest(prompt=" "), "prompt"),
    Case("generate-max-tokens-negative", IN + "Generate", I.GenerateRequest(prompt="Hi", parameters=_params(max_tokens=-1)), "max_tokens"),
    Case("generate-max-tokens-over-limit", IN + "Generate", I.GenerateRequest(prompt="Hi", parameters=_params(max_tokens=2**31 - 1)), "max_tokens"),
    Case("generate-temperature-nan", IN + "Generate", I.GenerateRequest(prompt="Hi", parameters=_params(temperature=NAN)), "temperature"),
    Case("generate-temperature-negative", IN + "Generate", I.GenerateRequest(prompt="Hi", parameters=_params(temperature=-1)), "temperature"),
    Case("generate-top-p-zero", IN + "Generate", I.GenerateRequest(prompt="Hi", parameters=_params(top_p=0)), "top_p"),
    Case("generate-top-p-inf", IN + "Generate", I.GenerateRequest(prompt="Hi", parameters=_params(top_p=INF)), "top_p"),
    Case("generate-stop-too-many", IN + "Generate", I.GenerateRequest(prompt="Hi", parameters=_params(stop=["s"] * 50)), "stop"),
    Case("generate-stop-empty-string", IN + "Generate", I.GenerateRequest(prompt="Hi", parameters=_params(stop=[""])), "stop"),
    Case("generate-response-format-unknown-enum", IN + "Generate", I.GenerateRequest(prompt="Hi", parameters=_params(response_format=I.ResponseFormat(type=9))), "type"),
    Case("generate-response-format-schema-not-json", IN + "Generate", I.GenerateRequest(prompt="Hi", parameters=_params(response_format=I.ResponseFormat(type=3, schema="{not json"))), "schema"),
    Case("generate-response-format-schema-deep", IN + "Generate", I.GenerateRequest(prompt="Hi", parameters=_params(response_format=I.ResponseFormat(type=3, schema='{"a":' * 3000 + "1" + "}" * 3000))), "schema"),
    Case("generate-response-format-schema-missing", IN + "Generate", I.GenerateRequest(prompt="Hi", parameters=_params(response_format=I.ResponseFormat(type=3))), "schema"),
    Case("generate-adapter-missing", IN + "Generate", I.GenerateRequest(prompt="Hi", model=I.ModelSelection(adapter="nosuch")), "nosuch", (NOT_FOUND, PRECONDITION)),
    Case("generate-adapter-name-bad", IN + "Generate", I.GenerateRequest(prompt="Hi", model=I.ModelSelection(adapter="../x")), "adapter", (INVALID, NOT_FOUND)),
    Case("generate-stream-temperature-inf", IN + "GenerateStream", I.GenerateStreamRequest(prompt="Hi", parameters=_params(temperature=INF)), "temperature"),
    Case("generate-stream-prompt-empty", IN + "GenerateStream", I.GenerateStreamRequest(), "prompt"),
    Case("chat-no-messages", IN + "Chat", I.ChatRequest(), "messages"),
    Case("chat-role-unknown", IN + "Chat", I.ChatRequest(messages=[C.ChatMessage(role="wizard", content="hi")]), "role"),
    Case("chat-role-huge", IN + "Chat", I.ChatRequest(messages=[C.ChatMessage(role=HUGE, content="hi")]), "role"),
    Case("chat-retrieval-mode-unknown-enum", IN + "Chat", I.ChatRequest(messages=_user(), retrieval=I.RetrievalOptions(enabled=True, mode=17)), "mode"),
    Case("chat-retrieval-limit-negative", IN + "Chat", I.ChatRequest(messages=_user(), retrieval=I.RetrievalOptions(enabled=True, limit=-2)), "limit"),
    Case("chat-retrieval-threshold-nan", IN + "Chat", I.ChatRequest(messages=_user(), retrieval=I.RetrievalOptions(enabled=True, score_threshold=NAN)), "score_threshold"),
    Case("chat-retrieval-filter-range-nan", IN + "Chat", I.ChatRequest(messages=_user(), retrieval=I.RetrievalOptions(enabled=True, filters=[_range(gt=NAN)])), "range.gt"),
    Case("chat-program-and-inline-program", IN + "Chat", I.ChatRequest(messages=_user(), program="p", inline_program=I.TeachingProgram(instructions="x")), "program"),
    Case("chat-program-missing", IN + "Chat", I.ChatRequest(messages=_user(), program="nosuch"), "nosuch", (NOT_FOUND,)),
    Case("chat-program-name-bad", IN + "Chat", I.ChatRequest(messages=_user(), program="Bad/Name"), "program"),
    Case("chat-messages-over-limit", IN + "Chat", I.ChatRequest(messages=_user() * 10_001), "messages"),
    Case("chat-seed-with-top-p-nan", IN + "Chat", I.ChatRequest(messages=_user(), parameters=_params(seed=7, top_p=NAN)), "top_p"),
    Case("chat-stream-max-tokens-negative", IN + "ChatStream", I.ChatStreamRequest(messages=_user(), parameters=_params(max_tokens=-9)), "max_tokens"),
    Case("chat-stream-no-messages", IN + "ChatStream", I.ChatStreamRequest(), "messages"),
    Case("load-adapter-name-empty", IN + "LoadAdapter", I.LoadAdapterRequest(), "name"),
    Case("load-adapter-missing", IN + "LoadAdapter", I.LoadAdapterRequest(name="nosuch"), "nosuch", (NOT_FOUND,)),
    Case("load-adapter-name-traversal", IN + "LoadAdapter", I.LoadAdapterRequest(name="../../x"), "name"),
    Case("unload-adapter-missing", IN + "UnloadAdapter", I.UnloadAdapterRequest(name="nosuch"), "nosuch", (NOT_FOUND, PRECONDITION)),
    # --- training
    Case("start-training-dataset-empty", TR + "StartTraining", _train(dataset=""), "dataset"),
    Case("start-training-adapter-name-bad", TR + "StartTraining", _train(adapter_name="Bad Adapter"), "adapter"),
    Case("start-training-dataset-missing", TR + "StartTraining", _train(dataset="nosuch"), "nosuch", (NOT_FOUND,)),
    Case("start-training-rank-negative", TR + "StartTraining", _train(lora__rank=-4), "rank"),
    Case("start-training-alpha-nan", TR + "StartTraining", _train(lora__alpha=NAN), "alpha"),
    Case("start-training-dropout-inf", TR + "StartTraining", _train(lora__dropout=INF), "dropout"),
    Case("start-training-bias-unknown", TR + "StartTraining", _train(lora__bias="some"), "bias"),
    Case("start-training-learning-rate-inf", TR + "StartTraining", _train(arguments__learning_rate=INF), "learning_rate"),
    Case("start-training-epochs-negative", TR + "StartTraining", _train(arguments__epochs=-1), "epochs"),
    Case("start-training-scheduler-unknown", TR + "StartTraining", _train(arguments__lr_scheduler="zigzag"), "scheduler"),
    Case("start-training-warmup-ratio-two", TR + "StartTraining", _train(arguments__warmup_ratio=2), "warmup"),
    Case("start-training-batch-size-negative", TR + "StartTraining", _train(arguments__batch_size=-2), "batch_size"),
    Case("start-training-workers-negative", TR + "StartTraining", _train(resources__num_workers=-1), "workers"),
    Case("start-training-cpus-nan", TR + "StartTraining", _train(resources__cpus_per_worker=NAN), "cpus_per_worker"),
    Case("start-training-target-module-huge", TR + "StartTraining", _train(lora__target_modules=[HUGE]), "target_modules"),
    Case("get-training-job-missing", TR + "GetJob", J.GetJobRequest(job_id="nosuch"), "nosuch", (NOT_FOUND,)),
    Case("list-training-jobs-state-unknown-enum", TR + "ListJobs", J.ListJobsRequest(state=12), "state"),
    Case("list-training-jobs-page-size-negative", TR + "ListJobs", J.ListJobsRequest(page_size=-3), "page_size"),
    Case("watch-training-job-missing", TR + "WatchJob", J.WatchJobRequest(job_id="nosuch"), "nosuch", (NOT_FOUND,)),
    Case("cancel-training-job-missing", TR + "CancelJob", J.CancelJobRequest(job_id="nosuch"), "nosuch", (NOT_FOUND,)),
    Case("resume-training-job-missing", TR + "ResumeJob", J.ResumeJobRequest(job_id="nosuch"), "nosuch", (NOT_FOUND,)),
    # --- optimization
    Case("start-optimization-name-bad", OP + "StartOptimization", _optimize(name="Bad Name"), "name"),
    Case("start-optimization-optimizer-unknown-enum", OP + "StartOptimization", _optimize(optimizer=99), "optimizer"),
    Case("start-optimization-metric-unknown-enum", OP + "StartOptimization", _optimize(metric=5), "metric"),
    Case("start-optimization-lm-format-unknown-enum", OP + "StartOptimization", _optimize(lm_format=8), "lm_format"),
    Case("start-optimization-weight-nan", OP + "StartOptimization", _optimize(weights=O.MetricWeights(socratic=NAN)), "socratic"),
    Case("start-optimization-weights-all-zero", OP + "StartOptimization", _optimize(weights=O.MetricWeights(context_usage=0, pedagogical_elements=0, length_ratio=0, socratic=0, similarity=0)), "weight"),
    Case("start-optimization-trials-negative", OP + "StartOptimization", _optimize(budget=O.OptimizerBudget(trials=-1)), "trials"),
    Case("start-optimization-max-tokens-negative", OP + "StartOptimization", _optimize(max_tokens=-1), "max_tokens"),
    Case("start-optimization-dataset-missing", OP + "StartOptimization", _optimize(dataset="nosuch"), "nosuch", (NOT_FOUND,)),
    Case("get-run-missing", OP + "GetJob", J.GetJobRequest(job_id="nosuch"), "nosuch", (NOT_FOUND,)),
    Case("watch-run-missing", OP + "WatchJob", J.WatchJobRequest(job_id="nosuch"), "nosuch", (NOT_FOUND,)),
    Case("cancel-run-missing", OP + "CancelJob", J.CancelJobRequest(job_id="nosuch"), "nosuch", (NOT_FOUND,)),
    Case("list-runs-kind-unknown", OP + "ListJobs", J.ListJobsRequest(kind="dataset"), "kind"),
    Case("list-runs-page-size-huge", OP + "ListJobs", J.ListJobsRequest(page_size=2**31 - 1), "page_size"),
    Case("get-program-missing", OP + "GetProgram", O.GetProgramRequest(name="nosuch"), "nosuch", (NOT_FOUND,)),
    Case("get-program-name-bad", OP + "GetProgram", O.GetProgramRequest(name="../x"), "name"),
    Case("evaluate-no-targets", OP + "Evaluate", O.EvaluateRequest(evaluation_set="tutor-benchmark"), "target"),
    Case("evaluate-target-spec-garbage", OP + "Evaluate", O.EvaluateRequest(evaluation_set="tutor-benchmark", targets=[O.EvaluationTarget(spec="teleport:x")]), "teleport"),
    Case("evaluate-dataset-and-set", OP + "Evaluate", O.EvaluateRequest(dataset="probe", evaluation_set="tutor-benchmark", targets=[O.EvaluationTarget(spec="base")]), "evaluation_set"),
    Case("evaluate-set-unknown", OP + "Evaluate", O.EvaluateRequest(evaluation_set="nosuch", targets=[O.EvaluationTarget(spec="base")]), "nosuch", (INVALID, NOT_FOUND)),
    Case("evaluate-threads-negative", OP + "Evaluate", O.EvaluateRequest(evaluation_set="tutor-benchmark", threads=-1, targets=[O.EvaluationTarget(spec="base")]), "threads"),
    Case("evaluate-weights-inf", OP + "Evaluate", O.EvaluateRequest(evaluation_set="tutor-benchmark", weights=O.MetricWeights(similarity=INF), targets=[O.EvaluationTarget(spec="base")]), "similarity"),
    Case("get-evaluation-missing", OP + "GetEvaluation", O.GetEvaluationRequest(evaluation_id="nosuch"), "nosuch", (NOT_FOUND,)),
    Case("promote-program-missing", OP + "PromoteProgram", O.PromoteProgramRequest(program="nosuch"), "nosuch", (NOT_FOUND,)),
    Case("promote-program-spec-bad", OP + "PromoteProgram", O.PromoteProgramRequest(program="a@b@c"), "program"),
    # --- bytes that are not the request message
    Case("raw-search-wire-garbage", S + "Search", b"\xff\xff\xff\xff", "SearchRequest", raw=True),
    Case("raw-get-dataset-invalid-utf8", DS + "GetDataset", b"\x0a\x02\xc3\x28", "GetDatasetRequest", raw=True),
    Case("raw-chat-truncated-length", IN + "Chat", b"\x0a\x7f\x0a", "ChatRequest", raw=True),
    Case("raw-start-training-wrong-wire-type", TR + "StartTraining", b"\x0d\x01\x02\x03\x04\x0a", "StartTrainingRequest", raw=True),
    Case("raw-evaluate-bad-tag", OP + "Evaluate", b"\x00\x00", "EvaluateRequest", raw=True),
]


@pytest.mark.parametrize("case", GRPC_CASES, ids=[case.id for case in GRPC_CASES])
def test_grpc_bad_input(served, case: Case) -> None:
    before = snapshot(served.store)
    request = [case.request] if case.raw and case.method.endswith("IngestDocuments") else case.request
    answer = call(served.channel, case.method, request, timeout=120, raw=case.raw)
    assert answer.code not in BROKEN, f"{case.id}: {answer.code.name} {answer.details}"
    assert answer.code in case.codes, f"{case.id}: {answer.code.name} {answer.details}"
    assert case.names.lower() in answer.details.lower(), f"{case.id}: message does not name {case.names!r}: {answer.details}"
    assert len(answer.details) <= 2200, f"{case.id}: message of {len(answer.details)} characters"
    assert snapshot(served.store) == before, f"{case.id}: the store changed on a refused call"
    assert healthy(served.channel)


def _chat(**fields: object) -> dict:
    return {"messages": [{"role": "user", "content": "Why is the sky blue?"}], **fields}


@dataclass
class HttpCase:
    id: str
    body: object  # a dict sent as JSON, or bytes sent as they are
    names: str
    statuses: tuple = (400,)
    path: str = "/v1/chat/completions"


HTTP_CASES = [
    HttpCase("http-retrieval-limit-not-a-number", _chat(retrieval={"limit": "abc"}), "retrieval.limit"),
    HttpCase("http-retrieval-limit-negative", _chat(retrieval={"limit": -1}), "retrieval.limit"),
    HttpCase("http-retrieval-threshold-nan", b'{"messages": [{"role": "user", "content": "hi"}], "retrieval": {"score_threshold": NaN}}', "score_threshold"),
    HttpCase("http-retrieval-unknown-key", _chat(retrieval={"limt": 3}), "limt"),
    HttpCase("http-retrieval-wrong-type", _chat(retrieval="yes please"), "retrieval"),
    HttpCase("http-messages-missing", {"model": "base"}, "messages"),
    HttpCase("http-messages-not-a-list", {"messages": "hi"}, "messages"),
    HttpCase("http-messages-empty", {"messages": []}, "messages"),
    HttpCase("http-message-role-unknown", {"messages": [{"role": "wizard", "content": "hi"}]}, "role"),
    HttpCase("http-message-content-wrong-type", {"messages": [{"role": "user", "content": 42}]}, "content"),
    HttpCase("http-max-tokens-negative", _chat(max_tokens=-5), "max_tokens"),
    HttpCase("http-max-tokens-not-a-number", _chat(max_tokens="many"), "max_tokens"),
    HttpCase("http-max-tokens-over-limit", _chat(max_tokens=10**12), "max_tokens"),
    HttpCase("http-temperature-nan", b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', "temperature"),
    HttpCase("http-temperature-infinity", b'{"messages": [{"role": "user", "content": "hi"}], "temperature": Infinity}', "temperature"),
    HttpCase("http-top-p-zero", _chat(top_p=0), "top_p"),
    HttpCase("http-n-over-limit", _chat(n=1000), "n 1000"),
    HttpCase("http-stop-too-many", _chat(stop=["s"] * 50), "stop"),
    HttpCase("http-seed-not-a-number", _chat(seed="x"), "seed"),
    HttpCase("http-seed-huge", _chat(seed=2**80), "seed"),
    HttpCase("http-response-format-unknown-type", _chat(response_format={"type": "yaml"}), "response_format"),
    HttpCase("http-response-format-schema-missing", _chat(response_format={"type": "json_schema"}), "json_schema"),
    HttpCase("http-response-format-schema-deep", {"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": json.loads('{"a":' * 500 + "1" + "}" * 500)}}}, "schema"),
    HttpCase("http-body-deeply-nested", b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "body"),
    HttpCase("http-body-not-json", b"this is not json", "body"),
    HttpCase("http-model-unknown-adapter", _chat(model="nosuch-adapter"), "nosuch-adapter", (404, 400)),
    HttpCase("http-model-name-huge", _chat(model="m" * 100_000), "adapter name", (400, 404)),
    HttpCase("http-program-bad-name", _chat(program="Bad/Name"), "program"),
    HttpCase("http-program-missing", _chat(program="nosuch"), "nosuch", (404,)),
    HttpCase("http-fallback-not-bool", _chat(fallback_to_base="maybe"), "fallback_to_base"),
]


@pytest.mark.parametrize("case", HTTP_CASES, ids=[case.id for case in HTTP_CASES])
def test_http_bad_input(served, case: HttpCase) -> None:
    before = snapshot(served.store)
    content = case.body if isinstance(case.body, bytes) else json.dumps(case.body).encode()
    response = httpx.post(
        served.http + case.path, content=content, headers={"content-type": "application/json"}, timeout=120
    )
    assert response.status_code < 500, f"{case.id}: {response.status_code} {response.text[:500]}"
    assert response.status_code in case.statuses, f"{case.id}: {response.status_code} {response.text[:500]}"
    message = response.json()["error"]["message"]
    assert case.names.lower() in message.lower(), f"{case.id}: message does not name {case.names!r}: {message}"
    assert len(message) <= 2200
    assert snapshot(served.store) == before
    assert healthy(served.channel)


def test_battery_has_at_least_100_named_cases() -> None:
    ids = [case.id for case in GRPC_CASES] + [case.id for case in HTTP_CASES]
    assert len(ids) >= 100 and len(set(ids)) == len(ids)
