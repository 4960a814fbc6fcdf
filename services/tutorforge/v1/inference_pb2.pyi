from tutorforge.v1 import common_pb2 as _common_pb2
from tutorforge.v1 import retrieval_pb2 as _retrieval_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ResponseFormatType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESPONSE_FORMAT_TYPE_UNSPECIFIED: _ClassVar[ResponseFormatType]
    RESPONSE_FORMAT_TYPE_TEXT: _ClassVar[ResponseFormatType]
    RESPONSE_FORMAT_TYPE_JSON_OBJECT: _ClassVar[ResponseFormatType]
    RESPONSE_FORMAT_TYPE_JSON_SCHEMA: _ClassVar[ResponseFormatType]

class FinishReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINISH_REASON_UNSPECIFIED: _ClassVar[FinishReason]
    FINISH_REASON_STOP: _ClassVar[FinishReason]
    FINISH_REASON_LENGTH: _ClassVar[FinishReason]
    FINISH_REASON_CANCELLED: _ClassVar[FinishReason]
RESPONSE_FORMAT_TYPE_UNSPECIFIED: ResponseFormatType
RESPONSE_FORMAT_TYPE_TEXT: ResponseFormatType
RESPONSE_FORMAT_TYPE_JSON_OBJECT: ResponseFormatType
RESPONSE_FORMAT_TYPE_JSON_SCHEMA: ResponseFormatType
FINISH_REASON_UNSPECIFIED: FinishReason
FINISH_REASON_STOP: FinishReason
FINISH_REASON_LENGTH: FinishReason
FINISH_REASON_CANCELLED: FinishReason

class GenerationParameters(_message.Message):
    __slots__ = ("max_tokens", "temperature", "top_p", "stop", "seed", "ignore_eos", "response_format", "frequency_penalty", "presence_penalty")
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    IGNORE_EOS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    FREQUENCY_PENALTY_FIELD_NUMBER: _ClassVar[int]
    PRESENCE_PENALTY_FIELD_NUMBER: _ClassVar[int]
    max_tokens: int
    temperature: float
    top_p: float
    stop: _containers.RepeatedScalarFieldContainer[str]
    seed: int
    ignore_eos: bool
    response_format: ResponseFormat
    frequency_penalty: float
    presence_penalty: float
    def __init__(self, max_tokens: _Optional[int] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., stop: _Optional[_Iterable[str]] = ..., seed: _Optional[int] = ..., ignore_eos: _Optional[bool] = ..., response_format: _Optional[_Union[ResponseFormat, _Mapping]] = ..., frequency_penalty: _Optional[float] = ..., presence_penalty: _Optional[float] = ...) -> None: ...

class ResponseFormat(_message.Message):
    __slots__ = ("type", "schema", "name")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    type: ResponseFormatType
    schema: str
    name: str
    def __init__(self, type: _Optional[_Union[ResponseFormatType, str]] = ..., schema: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class ModelSelection(_message.Message):
    __slots__ = ("adapter", "fallback_to_base")
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_TO_BASE_FIELD_NUMBER: _ClassVar[int]
    adapter: str
    fallback_to_base: bool
    def __init__(self, adapter: _Optional[str] = ..., fallback_to_base: _Optional[bool] = ...) -> None: ...

class GenerationSummary(_message.Message):
    __slots__ = ("usage", "finish_reason", "adapter", "fell_back_to_base", "time_to_first_token_seconds", "duration_seconds")
    USAGE_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    FELL_BACK_TO_BASE_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_TOKEN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    usage: _common_pb2.Usage
    finish_reason: FinishReason
    adapter: str
    fell_back_to_base: bool
    time_to_first_token_seconds: float
    duration_seconds: float
    def __init__(self, usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., finish_reason: _Optional[_Union[FinishReason, str]] = ..., adapter: _Optional[str] = ..., fell_back_to_base: _Optional[bool] = ..., time_to_first_token_seconds: _Optional[float] = ..., duration_seconds: _Optional[float] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("prompt", "model", "parameters")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    model: ModelSelection
    parameters: GenerationParameters
    def __init__(self, prompt: _Optional[str] = ..., model: _Optional[_Union[ModelSelection, _Mapping]] = ..., parameters: _Optional[_Union[GenerationParameters, _Mapping]] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("text", "summary")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    text: str
    summary: GenerationSummary
    def __init__(self, text: _Optional[str] = ..., summary: _Optional[_Union[GenerationSummary, _Mapping]] = ...) -> None: ...

class GenerateStreamRequest(_message.Message):
    __slots__ = ("prompt", "model", "parameters")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    model: ModelSelection
    parameters: GenerationParameters
    def __init__(self, prompt: _Optional[str] = ..., model: _Optional[_Union[ModelSelection, _Mapping]] = ..., parameters: _Optional[_Union[GenerationParameters, _Mapping]] = ...) -> None: ...

class TokenDelta(_message.Message):
    __slots__ = ("text", "token_id")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    text: str
    token_id: int
    def __init__(self, text: _Optional[str] = ..., token_id: _Optional[int] = ...) -> None: ...

class GenerateStreamResponse(_message.Message):
    __slots__ = ("token", "summary")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    token: TokenDelta
    summary: GenerationSummary
    def __init__(self, token: _Optional[_Union[TokenDelta, _Mapping]] = ..., summary: _Optional[_Union[GenerationSummary, _Mapping]] = ...) -> None: ...

class RetrievalOptions(_message.Message):
    __slots__ = ("enabled", "limit", "score_threshold", "filters", "mode")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    SCORE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    limit: int
    score_threshold: float
    filters: _containers.RepeatedCompositeFieldContainer[_retrieval_pb2.MetadataFilter]
    mode: _retrieval_pb2.SearchMode
    def __init__(self, enabled: _Optional[bool] = ..., limit: _Optional[int] = ..., score_threshold: _Optional[float] = ..., filters: _Optional[_Iterable[_Union[_retrieval_pb2.MetadataFilter, _Mapping]]] = ..., mode: _Optional[_Union[_retrieval_pb2.SearchMode, str]] = ...) -> None: ...

class Citation(_message.Message):
    __slots__ = ("tag", "document_id", "chunk_index", "source", "score", "text")
    TAG_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNK_INDEX_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    tag: str
    document_id: str
    chunk_index: int
    source: str
    score: float
    text: str
    def __init__(self, tag: _Optional[str] = ..., document_id: _Optional[str] = ..., chunk_index: _Optional[int] = ..., source: _Optional[str] = ..., score: _Optional[float] = ..., text: _Optional[str] = ...) -> None: ...

class Demonstration(_message.Message):
    __slots__ = ("query", "response")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    query: str
    response: str
    def __init__(self, query: _Optional[str] = ..., response: _Optional[str] = ...) -> None: ...

class TeachingProgram(_message.Message):
    __slots__ = ("instructions", "demonstrations", "adapter", "base_model", "max_tokens", "frequency_penalty")
    INSTRUCTIONS_FIELD_NUMBER: _ClassVar[int]
    DEMONSTRATIONS_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FREQUENCY_PENALTY_FIELD_NUMBER: _ClassVar[int]
    instructions: str
    demonstrations: _containers.RepeatedCompositeFieldContainer[Demonstration]
    adapter: str
    base_model: str
    max_tokens: int
    frequency_penalty: float
    def __init__(self, instructions: _Optional[str] = ..., demonstrations: _Optional[_Iterable[_Union[Demonstration, _Mapping]]] = ..., adapter: _Optional[str] = ..., base_model: _Optional[str] = ..., max_tokens: _Optional[int] = ..., frequency_penalty: _Optional[float] = ...) -> None: ...

class ChatRequest(_message.Message):
    __slots__ = ("messages", "model", "parameters", "retrieval", "system_prompt", "program", "inline_program")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_PROMPT_FIELD_NUMBER: _ClassVar[int]
    PROGRAM_FIELD_NUMBER: _ClassVar[int]
    INLINE_PROGRAM_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[_common_pb2.ChatMessage]
    model: ModelSelection
    parameters: GenerationParameters
    retrieval: RetrievalOptions
    system_prompt: str
    program: str
    inline_program: TeachingProgram
    def __init__(self, messages: _Optional[_Iterable[_Union[_common_pb2.ChatMessage, _Mapping]]] = ..., model: _Optional[_Union[ModelSelection, _Mapping]] = ..., parameters: _Optional[_Union[GenerationParameters, _Mapping]] = ..., retrieval: _Optional[_Union[RetrievalOptions, _Mapping]] = ..., system_prompt: _Optional[str] = ..., program: _Optional[str] = ..., inline_program: _Optional[_Union[TeachingProgram, _Mapping]] = ...) -> None: ...

class ChatResponse(_message.Message):
    __slots__ = ("message", "citations", "summary")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CITATIONS_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    message: _common_pb2.ChatMessage
    citations: _containers.RepeatedCompositeFieldContainer[Citation]
    summary: GenerationSummary
    def __init__(self, message: _Optional[_Union[_common_pb2.ChatMessage, _Mapping]] = ..., citations: _Optional[_Iterable[_Union[Citation, _Mapping]]] = ..., summary: _Optional[_Union[GenerationSummary, _Mapping]] = ...) -> None: ...

class ChatStreamRequest(_message.Message):
    __slots__ = ("messages", "model", "parameters", "retrieval", "system_prompt", "program", "inline_program")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_PROMPT_FIELD_NUMBER: _ClassVar[int]
    PROGRAM_FIELD_NUMBER: _ClassVar[int]
    INLINE_PROGRAM_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[_common_pb2.ChatMessage]
    model: ModelSelection
    parameters: GenerationParameters
    retrieval: RetrievalOptions
    system_prompt: str
    program: str
    inline_program: TeachingProgram
    def __init__(self, messages: _Optional[_Iterable[_Union[_common_pb2.ChatMessage, _Mapping]]] = ..., model: _Optional[_Union[ModelSelection, _Mapping]] = ..., parameters: _Optional[_Union[GenerationParameters, _Mapping]] = ..., retrieval: _Optional[_Union[RetrievalOptions, _Mapping]] = ..., system_prompt: _Optional[str] = ..., program: _Optional[str] = ..., inline_program: _Optional[_Union[TeachingProgram, _Mapping]] = ...) -> None: ...

class CitationList(_message.Message):
    __slots__ = ("citations",)
    CITATIONS_FIELD_NUMBER: _ClassVar[int]
    citations: _containers.RepeatedCompositeFieldContainer[Citation]
    def __init__(self, citations: _Optional[_Iterable[_Union[Citation, _Mapping]]] = ...) -> None: ...

class ChatStreamResponse(_message.Message):
    __slots__ = ("citations", "token", "summary")
    CITATIONS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    citations: CitationList
    token: TokenDelta
    summary: GenerationSummary
    def __init__(self, citations: _Optional[_Union[CitationList, _Mapping]] = ..., token: _Optional[_Union[TokenDelta, _Mapping]] = ..., summary: _Optional[_Union[GenerationSummary, _Mapping]] = ...) -> None: ...

class AdapterInfo(_message.Message):
    __slots__ = ("name", "version", "base_model", "loaded", "registered", "rank", "target_modules", "metadata", "files", "created_at_unix")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    TARGET_MODULES_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    base_model: str
    loaded: bool
    registered: bool
    rank: int
    target_modules: _containers.RepeatedScalarFieldContainer[str]
    metadata: _containers.ScalarMap[str, str]
    files: _containers.RepeatedScalarFieldContainer[str]
    created_at_unix: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., base_model: _Optional[str] = ..., loaded: _Optional[bool] = ..., registered: _Optional[bool] = ..., rank: _Optional[int] = ..., target_modules: _Optional[_Iterable[str]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., files: _Optional[_Iterable[str]] = ..., created_at_unix: _Optional[int] = ...) -> None: ...

class ListAdaptersRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAdaptersResponse(_message.Message):
    __slots__ = ("adapters", "base_model", "engine", "next_page_token")
    ADAPTERS_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    adapters: _containers.RepeatedCompositeFieldContainer[AdapterInfo]
    base_model: str
    engine: str
    next_page_token: str
    def __init__(self, adapters: _Optional[_Iterable[_Union[AdapterInfo, _Mapping]]] = ..., base_model: _Optional[str] = ..., engine: _Optional[str] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class LoadAdapterRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class LoadAdapterResponse(_message.Message):
    __slots__ = ("adapter",)
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    adapter: AdapterInfo
    def __init__(self, adapter: _Optional[_Union[AdapterInfo, _Mapping]] = ...) -> None: ...

class UnloadAdapterRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class UnloadAdapterResponse(_message.Message):
    __slots__ = ("adapter",)
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    adapter: AdapterInfo
    def __init__(self, adapter: _Optional[_Union[AdapterInfo, _Mapping]] = ...) -> None: ...
