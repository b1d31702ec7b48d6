from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Truncation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRUNCATION_UNSPECIFIED: _ClassVar[Truncation]
    TRUNCATION_END: _ClassVar[Truncation]
    TRUNCATION_NONE: _ClassVar[Truncation]
    TRUNCATION_SPLIT: _ClassVar[Truncation]
    TRUNCATION_START: _ClassVar[Truncation]

class Priority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIORITY_UNSPECIFIED: _ClassVar[Priority]
    PRIORITY_INTERACTIVE: _ClassVar[Priority]
    PRIORITY_BATCH: _ClassVar[Priority]
TRUNCATION_UNSPECIFIED: Truncation
TRUNCATION_END: Truncation
TRUNCATION_NONE: Truncation
TRUNCATION_SPLIT: Truncation
TRUNCATION_START: Truncation
PRIORITY_UNSPECIFIED: Priority
PRIORITY_INTERACTIVE: Priority
PRIORITY_BATCH: Priority

class RerankRequest(_message.Message):
    __slots__ = ("query", "documents", "top_k", "return_documents", "raw_scores", "truncation", "model", "window_tokens", "window_overlap_tokens", "max_windows", "max_document_tokens", "priority", "instruction")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    RETURN_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    RAW_SCORES_FIELD_NUMBER: _ClassVar[int]
    TRUNCATION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WINDOW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_OVERLAP_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_WINDOWS_FIELD_NUMBER: _ClassVar[int]
    MAX_DOCUMENT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    query: str
    documents: _containers.RepeatedScalarFieldContainer[str]
    top_k: int
    return_documents: bool
    raw_scores: bool
    truncation: Truncation
    model: str
    window_tokens: int
    window_overlap_tokens: int
    max_windows: int
    max_document_tokens: int
    priority: Priority
    instruction: str
    def __init__(self, query: _Optional[str] = ..., documents: _Optional[_Iterable[str]] = ..., top_k: _Optional[int] = ..., return_documents: _Optional[bool] = ..., raw_scores: _Optional[bool] = ..., truncation: _Optional[_Union[Truncation, str]] = ..., model: _Optional[str] = ..., window_tokens: _Optional[int] = ..., window_overlap_tokens: _Optional[int] = ..., max_windows: _Optional[int] = ..., max_document_tokens: _Optional[int] = ..., priority: _Optional[_Union[Priority, str]] = ..., instruction: _Optional[str] = ...) -> None: ...

class Window(_message.Message):
    __slots__ = ("index", "start_char", "end_char")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    START_CHAR_FIELD_NUMBER: _ClassVar[int]
    END_CHAR_FIELD_NUMBER: _ClassVar[int]
    index: int
    start_char: int
    end_char: int
    def __init__(self, index: _Optional[int] = ..., start_char: _Optional[int] = ..., end_char: _Optional[int] = ...) -> None: ...

class RankedDocument(_message.Message):
    __slots__ = ("index", "score", "document", "logit", "best_window")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    LOGIT_FIELD_NUMBER: _ClassVar[int]
    BEST_WINDOW_FIELD_NUMBER: _ClassVar[int]
    index: int
    score: float
    document: str
    logit: float
    best_window: Window
    def __init__(self, index: _Optional[int] = ..., score: _Optional[float] = ..., document: _Optional[str] = ..., logit: _Optional[float] = ..., best_window: _Optional[_Union[Window, _Mapping]] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("documents", "input_tokens", "truncated_documents", "windows", "cached_documents")
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    CACHED_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    documents: int
    input_tokens: int
    truncated_documents: int
    windows: int
    cached_documents: int
    def __init__(self, documents: _Optional[int] = ..., input_tokens: _Optional[int] = ..., truncated_documents: _Optional[int] = ..., windows: _Optional[int] = ..., cached_documents: _Optional[int] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("tokenization_ns", "inference_ns", "total_ns")
    TOKENIZATION_NS_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_NS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_NS_FIELD_NUMBER: _ClassVar[int]
    tokenization_ns: int
    inference_ns: int
    total_ns: int
    def __init__(self, tokenization_ns: _Optional[int] = ..., inference_ns: _Optional[int] = ..., total_ns: _Optional[int] = ...) -> None: ...

class RerankResponse(_message.Message):
    __slots__ = ("results", "usage", "timings", "model_id")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RankedDocument]
    usage: Usage
    timings: Timings
    model_id: str
    def __init__(self, results: _Optional[_Iterable[_Union[RankedDocument, _Mapping]]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., model_id: _Optional[str] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_documents_per_request", "max_query_chars", "max_document_chars", "max_message_bytes", "chunk_size", "max_inflight_pairs", "max_inflight_tokens", "max_concurrent_rpcs", "max_windows_per_request", "dispatch_window_tokens", "batch_share")
    MAX_DOCUMENTS_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    MAX_QUERY_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_DOCUMENT_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_INFLIGHT_PAIRS_FIELD_NUMBER: _ClassVar[int]
    MAX_INFLIGHT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_RPCS_FIELD_NUMBER: _ClassVar[int]
    MAX_WINDOWS_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    DISPATCH_WINDOW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SHARE_FIELD_NUMBER: _ClassVar[int]
    max_documents_per_request: int
    max_query_chars: int
    max_document_chars: int
    max_message_bytes: int
    chunk_size: int
    max_inflight_pairs: int
    max_inflight_tokens: int
    max_concurrent_rpcs: int
    max_windows_per_request: int
    dispatch_window_tokens: int
    batch_share: int
    def __init__(self, max_documents_per_request: _Optional[int] = ..., max_query_chars: _Optional[int] = ..., max_document_chars: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., chunk_size: _Optional[int] = ..., max_inflight_pairs: _Optional[int] = ..., max_inflight_tokens: _Optional[int] = ..., max_concurrent_rpcs: _Optional[int] = ..., max_windows_per_request: _Optional[int] = ..., dispatch_window_tokens: _Optional[int] = ..., batch_share: _Optional[int] = ...) -> None: ...

class ServedModel(_message.Message):
    __slots__ = ("name", "model_id", "aliases", "triton_model", "max_input_length", "dtype", "engine", "is_default", "token_type_ids", "family", "takes_instruction")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    TRITON_MODEL_FIELD_NUMBER: _ClassVar[int]
    MAX_INPUT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_TYPE_IDS_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    TAKES_INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    model_id: str
    aliases: _containers.RepeatedScalarFieldContainer[str]
    triton_model: str
    max_input_length: int
    dtype: str
    engine: str
    is_default: bool
    token_type_ids: bool
    family: str
    takes_instruction: bool
    def __init__(self, name: _Optional[str] = ..., model_id: _Optional[str] = ..., aliases: _Optional[_Iterable[str]] = ..., triton_model: _Optional[str] = ..., max_input_length: _Optional[int] = ..., dtype: _Optional[str] = ..., engine: _Optional[str] = ..., is_default: _Optional[bool] = ..., token_type_ids: _Optional[bool] = ..., family: _Optional[str] = ..., takes_instruction: _Optional[bool] = ...) -> None: ...

class InfoResponse(_message.Message):
    __slots__ = ("model_id", "triton_model", "triton_endpoints", "dtype", "engine", "max_input_length", "limits", "version", "auth_required", "models")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    TRITON_MODEL_FIELD_NUMBER: _ClassVar[int]
    TRITON_ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    MAX_INPUT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    AUTH_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    triton_model: str
    triton_endpoints: _containers.RepeatedScalarFieldContainer[str]
    dtype: str
    engine: str
    max_input_length: int
    limits: Limits
    version: str
    auth_required: bool
    models: _containers.RepeatedCompositeFieldContainer[ServedModel]
    def __init__(self, model_id: _Optional[str] = ..., triton_model: _Optional[str] = ..., triton_endpoints: _Optional[_Iterable[str]] = ..., dtype: _Optional[str] = ..., engine: _Optional[str] = ..., max_input_length: _Optional[int] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., version: _Optional[str] = ..., auth_required: _Optional[bool] = ..., models: _Optional[_Iterable[_Union[ServedModel, _Mapping]]] = ...) -> None: ...
