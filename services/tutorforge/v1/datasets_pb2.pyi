from tutorforge.v1 import common_pb2 as _common_pb2
from tutorforge.v1 import inference_pb2 as _inference_pb2
from tutorforge.v1 import jobs_pb2 as _jobs_pb2
from tutorforge.v1 import retrieval_pb2 as _retrieval_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RecordFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RECORD_FORMAT_UNSPECIFIED: _ClassVar[RecordFormat]
    RECORD_FORMAT_CHATML: _ClassVar[RecordFormat]
    RECORD_FORMAT_OPENAI: _ClassVar[RecordFormat]
    RECORD_FORMAT_INSTRUCTION: _ClassVar[RecordFormat]
    RECORD_FORMAT_SCENARIO: _ClassVar[RecordFormat]

class DatasetSplit(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATASET_SPLIT_UNSPECIFIED: _ClassVar[DatasetSplit]
    DATASET_SPLIT_TRAIN: _ClassVar[DatasetSplit]
    DATASET_SPLIT_VALIDATION: _ClassVar[DatasetSplit]

class ExportFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPORT_FORMAT_UNSPECIFIED: _ClassVar[ExportFormat]
    EXPORT_FORMAT_CHATML: _ClassVar[ExportFormat]
    EXPORT_FORMAT_OPENAI: _ClassVar[ExportFormat]
RECORD_FORMAT_UNSPECIFIED: RecordFormat
RECORD_FORMAT_CHATML: RecordFormat
RECORD_FORMAT_OPENAI: RecordFormat
RECORD_FORMAT_INSTRUCTION: RecordFormat
RECORD_FORMAT_SCENARIO: RecordFormat
DATASET_SPLIT_UNSPECIFIED: DatasetSplit
DATASET_SPLIT_TRAIN: DatasetSplit
DATASET_SPLIT_VALIDATION: DatasetSplit
EXPORT_FORMAT_UNSPECIFIED: ExportFormat
EXPORT_FORMAT_CHATML: ExportFormat
EXPORT_FORMAT_OPENAI: ExportFormat

class RecordFile(_message.Message):
    __slots__ = ("filename", "content", "format")
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    filename: str
    content: bytes
    format: RecordFormat
    def __init__(self, filename: _Optional[str] = ..., content: _Optional[bytes] = ..., format: _Optional[_Union[RecordFormat, str]] = ...) -> None: ...

class DocumentSource(_message.Message):
    __slots__ = ("filters", "max_chunks", "exchanges", "model", "min_faithfulness", "teacher")
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    MAX_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    EXCHANGES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MIN_FAITHFULNESS_FIELD_NUMBER: _ClassVar[int]
    TEACHER_FIELD_NUMBER: _ClassVar[int]
    filters: _containers.RepeatedCompositeFieldContainer[_retrieval_pb2.MetadataFilter]
    max_chunks: int
    exchanges: int
    model: _inference_pb2.ModelSelection
    min_faithfulness: float
    teacher: str
    def __init__(self, filters: _Optional[_Iterable[_Union[_retrieval_pb2.MetadataFilter, _Mapping]]] = ..., max_chunks: _Optional[int] = ..., exchanges: _Optional[int] = ..., model: _Optional[_Union[_inference_pb2.ModelSelection, _Mapping]] = ..., min_faithfulness: _Optional[float] = ..., teacher: _Optional[str] = ...) -> None: ...

class SyntheticSource(_message.Message):
    __slots__ = ("topic", "num_conversations", "num_exchanges", "model", "parameters", "teacher")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    NUM_CONVERSATIONS_FIELD_NUMBER: _ClassVar[int]
    NUM_EXCHANGES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    TEACHER_FIELD_NUMBER: _ClassVar[int]
    topic: str
    num_conversations: int
    num_exchanges: int
    model: _inference_pb2.ModelSelection
    parameters: _inference_pb2.GenerationParameters
    teacher: str
    def __init__(self, topic: _Optional[str] = ..., num_conversations: _Optional[int] = ..., num_exchanges: _Optional[int] = ..., model: _Optional[_Union[_inference_pb2.ModelSelection, _Mapping]] = ..., parameters: _Optional[_Union[_inference_pb2.GenerationParameters, _Mapping]] = ..., teacher: _Optional[str] = ...) -> None: ...

class SeedSource(_message.Message):
    __slots__ = ("files", "bundled", "dialogues_per_card", "seed")
    FILES_FIELD_NUMBER: _ClassVar[int]
    BUNDLED_FIELD_NUMBER: _ClassVar[int]
    DIALOGUES_PER_CARD_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    files: _containers.RepeatedCompositeFieldContainer[RecordFile]
    bundled: bool
    dialogues_per_card: int
    seed: int
    def __init__(self, files: _Optional[_Iterable[_Union[RecordFile, _Mapping]]] = ..., bundled: _Optional[bool] = ..., dialogues_per_card: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class DatasetSource(_message.Message):
    __slots__ = ("file", "documents", "synthetic", "seeds")
    FILE_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    SYNTHETIC_FIELD_NUMBER: _ClassVar[int]
    SEEDS_FIELD_NUMBER: _ClassVar[int]
    file: RecordFile
    documents: DocumentSource
    synthetic: SyntheticSource
    seeds: SeedSource
    def __init__(self, file: _Optional[_Union[RecordFile, _Mapping]] = ..., documents: _Optional[_Union[DocumentSource, _Mapping]] = ..., synthetic: _Optional[_Union[SyntheticSource, _Mapping]] = ..., seeds: _Optional[_Union[SeedSource, _Mapping]] = ...) -> None: ...

class BuildOptions(_message.Message):
    __slots__ = ("max_tokens", "strict", "near_duplicate_threshold", "validation_fraction", "seed", "decontaminate_against", "decontamination_ngram", "min_question_rate", "drop_answer_revealing")
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STRICT_FIELD_NUMBER: _ClassVar[int]
    NEAR_DUPLICATE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FRACTION_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    DECONTAMINATE_AGAINST_FIELD_NUMBER: _ClassVar[int]
    DECONTAMINATION_NGRAM_FIELD_NUMBER: _ClassVar[int]
    MIN_QUESTION_RATE_FIELD_NUMBER: _ClassVar[int]
    DROP_ANSWER_REVEALING_FIELD_NUMBER: _ClassVar[int]
    max_tokens: int
    strict: bool
    near_duplicate_threshold: float
    validation_fraction: float
    seed: int
    decontaminate_against: _containers.RepeatedCompositeFieldContainer[RecordFile]
    decontamination_ngram: int
    min_question_rate: float
    drop_answer_revealing: bool
    def __init__(self, max_tokens: _Optional[int] = ..., strict: _Optional[bool] = ..., near_duplicate_threshold: _Optional[float] = ..., validation_fraction: _Optional[float] = ..., seed: _Optional[int] = ..., decontaminate_against: _Optional[_Iterable[_Union[RecordFile, _Mapping]]] = ..., decontamination_ngram: _Optional[int] = ..., min_question_rate: _Optional[float] = ..., drop_answer_revealing: _Optional[bool] = ...) -> None: ...

class CreateDatasetRequest(_message.Message):
    __slots__ = ("name", "sources", "options", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    sources: _containers.RepeatedCompositeFieldContainer[DatasetSource]
    options: BuildOptions
    description: str
    def __init__(self, name: _Optional[str] = ..., sources: _Optional[_Iterable[_Union[DatasetSource, _Mapping]]] = ..., options: _Optional[_Union[BuildOptions, _Mapping]] = ..., description: _Optional[str] = ...) -> None: ...

class CreateDatasetResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _common_pb2.Job
    def __init__(self, job: _Optional[_Union[_common_pb2.Job, _Mapping]] = ...) -> None: ...

class DroppedRecord(_message.Message):
    __slots__ = ("source", "index", "reason")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    source: str
    index: int
    reason: str
    def __init__(self, source: _Optional[str] = ..., index: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class HistogramBucket(_message.Message):
    __slots__ = ("upper_bound", "count")
    UPPER_BOUND_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    upper_bound: int
    count: int
    def __init__(self, upper_bound: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...

class DatasetStats(_message.Message):
    __slots__ = ("records", "train_records", "validation_records", "turns", "token_length_histogram", "records_per_subject", "question_rate", "answer_reveal_rate", "mean_tokens")
    class RecordsPerSubjectEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_RECORDS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_RECORDS_FIELD_NUMBER: _ClassVar[int]
    TURNS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_LENGTH_HISTOGRAM_FIELD_NUMBER: _ClassVar[int]
    RECORDS_PER_SUBJECT_FIELD_NUMBER: _ClassVar[int]
    QUESTION_RATE_FIELD_NUMBER: _ClassVar[int]
    ANSWER_REVEAL_RATE_FIELD_NUMBER: _ClassVar[int]
    MEAN_TOKENS_FIELD_NUMBER: _ClassVar[int]
    records: int
    train_records: int
    validation_records: int
    turns: int
    token_length_histogram: _containers.RepeatedCompositeFieldContainer[HistogramBucket]
    records_per_subject: _containers.ScalarMap[str, int]
    question_rate: float
    answer_reveal_rate: float
    mean_tokens: float
    def __init__(self, records: _Optional[int] = ..., train_records: _Optional[int] = ..., validation_records: _Optional[int] = ..., turns: _Optional[int] = ..., token_length_histogram: _Optional[_Iterable[_Union[HistogramBucket, _Mapping]]] = ..., records_per_subject: _Optional[_Mapping[str, int]] = ..., question_rate: _Optional[float] = ..., answer_reveal_rate: _Optional[float] = ..., mean_tokens: _Optional[float] = ...) -> None: ...

class SourceSummary(_message.Message):
    __slots__ = ("source", "format", "records_read", "records_kept", "records_dropped", "dropped_by_reason")
    class DroppedByReasonEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    RECORDS_READ_FIELD_NUMBER: _ClassVar[int]
    RECORDS_KEPT_FIELD_NUMBER: _ClassVar[int]
    RECORDS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_BY_REASON_FIELD_NUMBER: _ClassVar[int]
    source: str
    format: RecordFormat
    records_read: int
    records_kept: int
    records_dropped: int
    dropped_by_reason: _containers.ScalarMap[str, int]
    def __init__(self, source: _Optional[str] = ..., format: _Optional[_Union[RecordFormat, str]] = ..., records_read: _Optional[int] = ..., records_kept: _Optional[int] = ..., records_dropped: _Optional[int] = ..., dropped_by_reason: _Optional[_Mapping[str, int]] = ...) -> None: ...

class DatasetManifest(_message.Message):
    __slots__ = ("sources", "dropped", "dropped_by_reason", "parameters_json", "tokenizer")
    class DroppedByReasonEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_BY_REASON_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_JSON_FIELD_NUMBER: _ClassVar[int]
    TOKENIZER_FIELD_NUMBER: _ClassVar[int]
    sources: _containers.RepeatedCompositeFieldContainer[SourceSummary]
    dropped: _containers.RepeatedCompositeFieldContainer[DroppedRecord]
    dropped_by_reason: _containers.ScalarMap[str, int]
    parameters_json: str
    tokenizer: str
    def __init__(self, sources: _Optional[_Iterable[_Union[SourceSummary, _Mapping]]] = ..., dropped: _Optional[_Iterable[_Union[DroppedRecord, _Mapping]]] = ..., dropped_by_reason: _Optional[_Mapping[str, int]] = ..., parameters_json: _Optional[str] = ..., tokenizer: _Optional[str] = ...) -> None: ...

class DatasetVersion(_message.Message):
    __slots__ = ("name", "version", "content_hash", "created_at_unix", "description", "stats", "manifest")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    content_hash: str
    created_at_unix: int
    description: str
    stats: DatasetStats
    manifest: DatasetManifest
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., content_hash: _Optional[str] = ..., created_at_unix: _Optional[int] = ..., description: _Optional[str] = ..., stats: _Optional[_Union[DatasetStats, _Mapping]] = ..., manifest: _Optional[_Union[DatasetManifest, _Mapping]] = ...) -> None: ...

class GetDatasetRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class GetDatasetResponse(_message.Message):
    __slots__ = ("dataset",)
    DATASET_FIELD_NUMBER: _ClassVar[int]
    dataset: DatasetVersion
    def __init__(self, dataset: _Optional[_Union[DatasetVersion, _Mapping]] = ...) -> None: ...

class ListDatasetsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDatasetsResponse(_message.Message):
    __slots__ = ("datasets", "next_page_token")
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    datasets: _containers.RepeatedCompositeFieldContainer[DatasetVersion]
    next_page_token: str
    def __init__(self, datasets: _Optional[_Iterable[_Union[DatasetVersion, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ExportDatasetRequest(_message.Message):
    __slots__ = ("name", "version", "split", "format")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    split: DatasetSplit
    format: ExportFormat
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., split: _Optional[_Union[DatasetSplit, str]] = ..., format: _Optional[_Union[ExportFormat, str]] = ...) -> None: ...

class ExportDatasetResponse(_message.Message):
    __slots__ = ("line",)
    LINE_FIELD_NUMBER: _ClassVar[int]
    line: str
    def __init__(self, line: _Optional[str] = ...) -> None: ...

class DeleteDatasetRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class DeleteDatasetResponse(_message.Message):
    __slots__ = ("deleted_versions",)
    DELETED_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    deleted_versions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, deleted_versions: _Optional[_Iterable[str]] = ...) -> None: ...

class RecordIssue(_message.Message):
    __slots__ = ("source", "index", "reason")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    source: str
    index: int
    reason: str
    def __init__(self, source: _Optional[str] = ..., index: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class ValidateRecordsRequest(_message.Message):
    __slots__ = ("files", "max_tokens")
    FILES_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    files: _containers.RepeatedCompositeFieldContainer[RecordFile]
    max_tokens: int
    def __init__(self, files: _Optional[_Iterable[_Union[RecordFile, _Mapping]]] = ..., max_tokens: _Optional[int] = ...) -> None: ...

class ValidateRecordsResponse(_message.Message):
    __slots__ = ("valid", "invalid", "issues")
    VALID_FIELD_NUMBER: _ClassVar[int]
    INVALID_FIELD_NUMBER: _ClassVar[int]
    ISSUES_FIELD_NUMBER: _ClassVar[int]
    valid: int
    invalid: int
    issues: _containers.RepeatedCompositeFieldContainer[RecordIssue]
    def __init__(self, valid: _Optional[int] = ..., invalid: _Optional[int] = ..., issues: _Optional[_Iterable[_Union[RecordIssue, _Mapping]]] = ...) -> None: ...
