from tutorforge.v1 import common_pb2 as _common_pb2
from tutorforge.v1 import jobs_pb2 as _jobs_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LoraConfig(_message.Message):
    __slots__ = ("rank", "alpha", "dropout", "target_modules", "bias")
    RANK_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    DROPOUT_FIELD_NUMBER: _ClassVar[int]
    TARGET_MODULES_FIELD_NUMBER: _ClassVar[int]
    BIAS_FIELD_NUMBER: _ClassVar[int]
    rank: int
    alpha: float
    dropout: float
    target_modules: _containers.RepeatedScalarFieldContainer[str]
    bias: str
    def __init__(self, rank: _Optional[int] = ..., alpha: _Optional[float] = ..., dropout: _Optional[float] = ..., target_modules: _Optional[_Iterable[str]] = ..., bias: _Optional[str] = ...) -> None: ...

class TrainingArguments(_message.Message):
    __slots__ = ("epochs", "batch_size", "gradient_accumulation_steps", "learning_rate", "warmup_ratio", "lr_scheduler", "weight_decay", "max_seq_length", "seed", "eval_steps", "checkpoint_steps", "max_steps", "packing", "group_by_length", "max_grad_norm", "early_stopping_patience", "early_stopping_min_delta")
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_ACCUMULATION_STEPS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    WARMUP_RATIO_FIELD_NUMBER: _ClassVar[int]
    LR_SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    MAX_SEQ_LENGTH_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    EVAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_STEPS_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    PACKING_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_LENGTH_FIELD_NUMBER: _ClassVar[int]
    MAX_GRAD_NORM_FIELD_NUMBER: _ClassVar[int]
    EARLY_STOPPING_PATIENCE_FIELD_NUMBER: _ClassVar[int]
    EARLY_STOPPING_MIN_DELTA_FIELD_NUMBER: _ClassVar[int]
    epochs: float
    batch_size: int
    gradient_accumulation_steps: int
    learning_rate: float
    warmup_ratio: float
    lr_scheduler: str
    weight_decay: float
    max_seq_length: int
    seed: int
    eval_steps: int
    checkpoint_steps: int
    max_steps: int
    packing: bool
    group_by_length: bool
    max_grad_norm: float
    early_stopping_patience: int
    early_stopping_min_delta: float
    def __init__(self, epochs: _Optional[float] = ..., batch_size: _Optional[int] = ..., gradient_accumulation_steps: _Optional[int] = ..., learning_rate: _Optional[float] = ..., warmup_ratio: _Optional[float] = ..., lr_scheduler: _Optional[str] = ..., weight_decay: _Optional[float] = ..., max_seq_length: _Optional[int] = ..., seed: _Optional[int] = ..., eval_steps: _Optional[int] = ..., checkpoint_steps: _Optional[int] = ..., max_steps: _Optional[int] = ..., packing: _Optional[bool] = ..., group_by_length: _Optional[bool] = ..., max_grad_norm: _Optional[float] = ..., early_stopping_patience: _Optional[int] = ..., early_stopping_min_delta: _Optional[float] = ...) -> None: ...

class ResourceConfig(_message.Message):
    __slots__ = ("num_workers", "cpus_per_worker", "gpus_per_worker")
    NUM_WORKERS_FIELD_NUMBER: _ClassVar[int]
    CPUS_PER_WORKER_FIELD_NUMBER: _ClassVar[int]
    GPUS_PER_WORKER_FIELD_NUMBER: _ClassVar[int]
    num_workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    def __init__(self, num_workers: _Optional[int] = ..., cpus_per_worker: _Optional[float] = ..., gpus_per_worker: _Optional[float] = ...) -> None: ...

class StartTrainingRequest(_message.Message):
    __slots__ = ("dataset", "dataset_version", "adapter_name", "lora", "arguments", "resources", "metadata", "use_unsloth", "load_in_4bit", "merge_and_export")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DATASET_FIELD_NUMBER: _ClassVar[int]
    DATASET_VERSION_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_NAME_FIELD_NUMBER: _ClassVar[int]
    LORA_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    USE_UNSLOTH_FIELD_NUMBER: _ClassVar[int]
    LOAD_IN_4BIT_FIELD_NUMBER: _ClassVar[int]
    MERGE_AND_EXPORT_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    dataset_version: str
    adapter_name: str
    lora: LoraConfig
    arguments: TrainingArguments
    resources: ResourceConfig
    metadata: _containers.ScalarMap[str, str]
    use_unsloth: bool
    load_in_4bit: bool
    merge_and_export: bool
    def __init__(self, dataset: _Optional[str] = ..., dataset_version: _Optional[str] = ..., adapter_name: _Optional[str] = ..., lora: _Optional[_Union[LoraConfig, _Mapping]] = ..., arguments: _Optional[_Union[TrainingArguments, _Mapping]] = ..., resources: _Optional[_Union[ResourceConfig, _Mapping]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., use_unsloth: _Optional[bool] = ..., load_in_4bit: _Optional[bool] = ..., merge_and_export: _Optional[bool] = ...) -> None: ...

class StartTrainingResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _common_pb2.Job
    def __init__(self, job: _Optional[_Union[_common_pb2.Job, _Mapping]] = ...) -> None: ...
