from tutorforge.v1 import common_pb2 as _common_pb2
from tutorforge.v1 import jobs_pb2 as _jobs_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Optimizer(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OPTIMIZER_UNSPECIFIED: _ClassVar[Optimizer]
    OPTIMIZER_LABELED_FEW_SHOT: _ClassVar[Optimizer]
    OPTIMIZER_BOOTSTRAP_FEW_SHOT: _ClassVar[Optimizer]
    OPTIMIZER_BOOTSTRAP_FEW_SHOT_WITH_RANDOM_SEARCH: _ClassVar[Optimizer]
    OPTIMIZER_COPRO: _ClassVar[Optimizer]
    OPTIMIZER_MIPRO_V2: _ClassVar[Optimizer]
    OPTIMIZER_GEPA: _ClassVar[Optimizer]
    OPTIMIZER_SIMBA: _ClassVar[Optimizer]

class Metric(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METRIC_UNSPECIFIED: _ClassVar[Metric]
    METRIC_PEDAGOGICAL: _ClassVar[Metric]
    METRIC_JUDGE: _ClassVar[Metric]

class LmFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LM_FORMAT_UNSPECIFIED: _ClassVar[LmFormat]
    LM_FORMAT_PLAIN: _ClassVar[LmFormat]
    LM_FORMAT_CHAT: _ClassVar[LmFormat]
    LM_FORMAT_JSON: _ClassVar[LmFormat]
OPTIMIZER_UNSPECIFIED: Optimizer
OPTIMIZER_LABELED_FEW_SHOT: Optimizer
OPTIMIZER_BOOTSTRAP_FEW_SHOT: Optimizer
OPTIMIZER_BOOTSTRAP_FEW_SHOT_WITH_RANDOM_SEARCH: Optimizer
OPTIMIZER_COPRO: Optimizer
OPTIMIZER_MIPRO_V2: Optimizer
OPTIMIZER_GEPA: Optimizer
OPTIMIZER_SIMBA: Optimizer
METRIC_UNSPECIFIED: Metric
METRIC_PEDAGOGICAL: Metric
METRIC_JUDGE: Metric
LM_FORMAT_UNSPECIFIED: LmFormat
LM_FORMAT_PLAIN: LmFormat
LM_FORMAT_CHAT: LmFormat
LM_FORMAT_JSON: LmFormat

class MetricWeights(_message.Message):
    __slots__ = ("context_usage", "pedagogical_elements", "length_ratio", "socratic", "similarity")
    CONTEXT_USAGE_FIELD_NUMBER: _ClassVar[int]
    PEDAGOGICAL_ELEMENTS_FIELD_NUMBER: _ClassVar[int]
    LENGTH_RATIO_FIELD_NUMBER: _ClassVar[int]
    SOCRATIC_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    context_usage: float
    pedagogical_elements: float
    length_ratio: float
    socratic: float
    similarity: float
    def __init__(self, context_usage: _Optional[float] = ..., pedagogical_elements: _Optional[float] = ..., length_ratio: _Optional[float] = ..., socratic: _Optional[float] = ..., similarity: _Optional[float] = ...) -> None: ...

class OptimizerBudget(_message.Message):
    __slots__ = ("trials", "candidates", "threads", "max_bootstrapped_demos", "max_labeled_demos", "max_train_examples", "max_validation_examples", "max_lm_calls", "max_lm_tokens")
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    MAX_BOOTSTRAPPED_DEMOS_FIELD_NUMBER: _ClassVar[int]
    MAX_LABELED_DEMOS_FIELD_NUMBER: _ClassVar[int]
    MAX_TRAIN_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    MAX_VALIDATION_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    MAX_LM_CALLS_FIELD_NUMBER: _ClassVar[int]
    MAX_LM_TOKENS_FIELD_NUMBER: _ClassVar[int]
    trials: int
    candidates: int
    threads: int
    max_bootstrapped_demos: int
    max_labeled_demos: int
    max_train_examples: int
    max_validation_examples: int
    max_lm_calls: int
    max_lm_tokens: int
    def __init__(self, trials: _Optional[int] = ..., candidates: _Optional[int] = ..., threads: _Optional[int] = ..., max_bootstrapped_demos: _Optional[int] = ..., max_labeled_demos: _Optional[int] = ..., max_train_examples: _Optional[int] = ..., max_validation_examples: _Optional[int] = ..., max_lm_calls: _Optional[int] = ..., max_lm_tokens: _Optional[int] = ...) -> None: ...

class StartOptimizationRequest(_message.Message):
    __slots__ = ("name", "dataset", "dataset_version", "optimizer", "adapter", "budget", "seed", "weights", "lm_format", "reflection_adapter", "use_retrieval", "max_tokens", "metric", "frequency_penalties")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    DATASET_VERSION_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    LM_FORMAT_FIELD_NUMBER: _ClassVar[int]
    REFLECTION_ADAPTER_FIELD_NUMBER: _ClassVar[int]
    USE_RETRIEVAL_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    FREQUENCY_PENALTIES_FIELD_NUMBER: _ClassVar[int]
    name: str
    dataset: str
    dataset_version: str
    optimizer: Optimizer
    adapter: str
    budget: OptimizerBudget
    seed: int
    weights: MetricWeights
    lm_format: LmFormat
    reflection_adapter: str
    use_retrieval: bool
    max_tokens: int
    metric: Metric
    frequency_penalties: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, name: _Optional[str] = ..., dataset: _Optional[str] = ..., dataset_version: _Optional[str] = ..., optimizer: _Optional[_Union[Optimizer, str]] = ..., adapter: _Optional[str] = ..., budget: _Optional[_Union[OptimizerBudget, _Mapping]] = ..., seed: _Optional[int] = ..., weights: _Optional[_Union[MetricWeights, _Mapping]] = ..., lm_format: _Optional[_Union[LmFormat, str]] = ..., reflection_adapter: _Optional[str] = ..., use_retrieval: _Optional[bool] = ..., max_tokens: _Optional[int] = ..., metric: _Optional[_Union[Metric, str]] = ..., frequency_penalties: _Optional[_Iterable[float]] = ...) -> None: ...

class StartOptimizationResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _common_pb2.Job
    def __init__(self, job: _Optional[_Union[_common_pb2.Job, _Mapping]] = ...) -> None: ...

class ProgramInfo(_message.Message):
    __slots__ = ("name", "version", "optimizer", "dataset", "dataset_version", "adapter", "baseline_score", "optimized_score", "lm_calls", "lm_tokens", "created_at_unix", "parameters_json", "lm_format", "run_id", "base_model", "benchmark_json", "metric", "stopped_early")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    DATASET_VERSION_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    BASELINE_SCORE_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZED_SCORE_FIELD_NUMBER: _ClassVar[int]
    LM_CALLS_FIELD_NUMBER: _ClassVar[int]
    LM_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_JSON_FIELD_NUMBER: _ClassVar[int]
    LM_FORMAT_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    BENCHMARK_JSON_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    STOPPED_EARLY_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    optimizer: str
    dataset: str
    dataset_version: str
    adapter: str
    baseline_score: float
    optimized_score: float
    lm_calls: int
    lm_tokens: int
    created_at_unix: int
    parameters_json: str
    lm_format: str
    run_id: str
    base_model: str
    benchmark_json: str
    metric: str
    stopped_early: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., optimizer: _Optional[str] = ..., dataset: _Optional[str] = ..., dataset_version: _Optional[str] = ..., adapter: _Optional[str] = ..., baseline_score: _Optional[float] = ..., optimized_score: _Optional[float] = ..., lm_calls: _Optional[int] = ..., lm_tokens: _Optional[int] = ..., created_at_unix: _Optional[int] = ..., parameters_json: _Optional[str] = ..., lm_format: _Optional[str] = ..., run_id: _Optional[str] = ..., base_model: _Optional[str] = ..., benchmark_json: _Optional[str] = ..., metric: _Optional[str] = ..., stopped_early: _Optional[str] = ...) -> None: ...

class ListProgramsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListProgramsResponse(_message.Message):
    __slots__ = ("programs", "next_page_token")
    PROGRAMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    programs: _containers.RepeatedCompositeFieldContainer[ProgramInfo]
    next_page_token: str
    def __init__(self, programs: _Optional[_Iterable[_Union[ProgramInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetProgramRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class GetProgramResponse(_message.Message):
    __slots__ = ("program", "state_json")
    PROGRAM_FIELD_NUMBER: _ClassVar[int]
    STATE_JSON_FIELD_NUMBER: _ClassVar[int]
    program: ProgramInfo
    state_json: str
    def __init__(self, program: _Optional[_Union[ProgramInfo, _Mapping]] = ..., state_json: _Optional[str] = ...) -> None: ...

class EvaluationTarget(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: str
    def __init__(self, spec: _Optional[str] = ...) -> None: ...

class EvaluateRequest(_message.Message):
    __slots__ = ("dataset", "dataset_version", "targets", "weights", "max_examples", "use_retrieval", "threads", "max_tokens", "evaluation_set")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    DATASET_VERSION_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    MAX_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    USE_RETRIEVAL_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_SET_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    dataset_version: str
    targets: _containers.RepeatedCompositeFieldContainer[EvaluationTarget]
    weights: MetricWeights
    max_examples: int
    use_retrieval: bool
    threads: int
    max_tokens: int
    evaluation_set: str
    def __init__(self, dataset: _Optional[str] = ..., dataset_version: _Optional[str] = ..., targets: _Optional[_Iterable[_Union[EvaluationTarget, _Mapping]]] = ..., weights: _Optional[_Union[MetricWeights, _Mapping]] = ..., max_examples: _Optional[int] = ..., use_retrieval: _Optional[bool] = ..., threads: _Optional[int] = ..., max_tokens: _Optional[int] = ..., evaluation_set: _Optional[str] = ...) -> None: ...

class EvaluateResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _common_pb2.Job
    def __init__(self, job: _Optional[_Union[_common_pb2.Job, _Mapping]] = ...) -> None: ...

class TargetMetrics(_message.Message):
    __slots__ = ("target", "examples", "pedagogical_score", "context_usage", "pedagogical_elements", "length_ratio", "question_rate", "answer_reveal_rate", "mean_latency_seconds", "score_per_subject", "errors", "socratic", "citation_rate", "groundedness", "mean_words", "score_per_kind", "intervals", "similarity_mean")
    class ScorePerSubjectEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class ScorePerKindEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class IntervalsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Interval
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Interval, _Mapping]] = ...) -> None: ...
    TARGET_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    PEDAGOGICAL_SCORE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_USAGE_FIELD_NUMBER: _ClassVar[int]
    PEDAGOGICAL_ELEMENTS_FIELD_NUMBER: _ClassVar[int]
    LENGTH_RATIO_FIELD_NUMBER: _ClassVar[int]
    QUESTION_RATE_FIELD_NUMBER: _ClassVar[int]
    ANSWER_REVEAL_RATE_FIELD_NUMBER: _ClassVar[int]
    MEAN_LATENCY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SCORE_PER_SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    SOCRATIC_FIELD_NUMBER: _ClassVar[int]
    CITATION_RATE_FIELD_NUMBER: _ClassVar[int]
    GROUNDEDNESS_FIELD_NUMBER: _ClassVar[int]
    MEAN_WORDS_FIELD_NUMBER: _ClassVar[int]
    SCORE_PER_KIND_FIELD_NUMBER: _ClassVar[int]
    INTERVALS_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_MEAN_FIELD_NUMBER: _ClassVar[int]
    target: str
    examples: int
    pedagogical_score: float
    context_usage: float
    pedagogical_elements: float
    length_ratio: float
    question_rate: float
    answer_reveal_rate: float
    mean_latency_seconds: float
    score_per_subject: _containers.ScalarMap[str, float]
    errors: int
    socratic: float
    citation_rate: float
    groundedness: float
    mean_words: float
    score_per_kind: _containers.ScalarMap[str, float]
    intervals: _containers.MessageMap[str, Interval]
    similarity_mean: float
    def __init__(self, target: _Optional[str] = ..., examples: _Optional[int] = ..., pedagogical_score: _Optional[float] = ..., context_usage: _Optional[float] = ..., pedagogical_elements: _Optional[float] = ..., length_ratio: _Optional[float] = ..., question_rate: _Optional[float] = ..., answer_reveal_rate: _Optional[float] = ..., mean_latency_seconds: _Optional[float] = ..., score_per_subject: _Optional[_Mapping[str, float]] = ..., errors: _Optional[int] = ..., socratic: _Optional[float] = ..., citation_rate: _Optional[float] = ..., groundedness: _Optional[float] = ..., mean_words: _Optional[float] = ..., score_per_kind: _Optional[_Mapping[str, float]] = ..., intervals: _Optional[_Mapping[str, Interval]] = ..., similarity_mean: _Optional[float] = ...) -> None: ...

class Interval(_message.Message):
    __slots__ = ("low", "high")
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    low: float
    high: float
    def __init__(self, low: _Optional[float] = ..., high: _Optional[float] = ...) -> None: ...

class EvaluationReport(_message.Message):
    __slots__ = ("evaluation_id", "dataset", "dataset_version", "targets", "report_json_path", "report_markdown_path", "chart_paths")
    EVALUATION_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    DATASET_VERSION_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    REPORT_JSON_PATH_FIELD_NUMBER: _ClassVar[int]
    REPORT_MARKDOWN_PATH_FIELD_NUMBER: _ClassVar[int]
    CHART_PATHS_FIELD_NUMBER: _ClassVar[int]
    evaluation_id: str
    dataset: str
    dataset_version: str
    targets: _containers.RepeatedCompositeFieldContainer[TargetMetrics]
    report_json_path: str
    report_markdown_path: str
    chart_paths: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, evaluation_id: _Optional[str] = ..., dataset: _Optional[str] = ..., dataset_version: _Optional[str] = ..., targets: _Optional[_Iterable[_Union[TargetMetrics, _Mapping]]] = ..., report_json_path: _Optional[str] = ..., report_markdown_path: _Optional[str] = ..., chart_paths: _Optional[_Iterable[str]] = ...) -> None: ...

class GetEvaluationRequest(_message.Message):
    __slots__ = ("evaluation_id", "include_files")
    EVALUATION_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_FILES_FIELD_NUMBER: _ClassVar[int]
    evaluation_id: str
    include_files: bool
    def __init__(self, evaluation_id: _Optional[str] = ..., include_files: _Optional[bool] = ...) -> None: ...

class ReportFile(_message.Message):
    __slots__ = ("path", "content")
    PATH_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    path: str
    content: bytes
    def __init__(self, path: _Optional[str] = ..., content: _Optional[bytes] = ...) -> None: ...

class GetEvaluationResponse(_message.Message):
    __slots__ = ("report", "files")
    REPORT_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    report: EvaluationReport
    files: _containers.RepeatedCompositeFieldContainer[ReportFile]
    def __init__(self, report: _Optional[_Union[EvaluationReport, _Mapping]] = ..., files: _Optional[_Iterable[_Union[ReportFile, _Mapping]]] = ...) -> None: ...

class PromoteProgramRequest(_message.Message):
    __slots__ = ("program", "force")
    PROGRAM_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    program: str
    force: bool
    def __init__(self, program: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class PromoteProgramResponse(_message.Message):
    __slots__ = ("program", "previous_version", "reason")
    PROGRAM_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    program: ProgramInfo
    previous_version: str
    reason: str
    def __init__(self, program: _Optional[_Union[ProgramInfo, _Mapping]] = ..., previous_version: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...
