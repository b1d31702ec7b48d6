"""What Info says of the service, in the gateway's own types: each API renders it in its dialect
(reranker.v1's InfoResponse, tei.v1's and TEI's /info). A model's dtype and engine are filled in once Triton
answers with its configuration of the model (until then empty)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from ara_reranker_server.settings import Settings

__all__ = ["ModelDescription", "ServiceLimits", "ServiceInfo"]


@dataclass
class ModelDescription:
    """One served model."""

    name: str  # the name it is served under (make run's short name)
    model_id: str  # hub id or description, reported in responses
    triton_model: str
    max_input_length: int
    is_default: bool
    token_type_ids: bool  # BERT-style: the pairs carry token type ids
    aliases: tuple[str, ...] = ()  # other names it answers to (its hub id)
    dtype: str = ""
    engine: str = ""
    family: str = "cross-encoder"  # ara_reranker_model.families: cross-encoder, qwen3-reranker, gemma-reranker
    takes_instruction: bool = False  # the LLM rerankers: a request may carry an instruction


@dataclass
class ServiceLimits:
    """What one request may ask for, and the gateway's bounds (Info shows them): the settings of these names
    (``of``), under the names of reranker.v1's Limits message."""

    max_documents_per_request: int
    max_query_chars: int
    max_document_chars: int
    max_message_bytes: int
    chunk_size: int  # lowered to Triton's max_batch_size for the default model once known
    max_inflight_pairs: int
    max_inflight_tokens: int
    max_concurrent_rpcs: int
    max_windows_per_request: int
    dispatch_window_tokens: int
    batch_share: int

    @classmethod
    def of(cls, settings: Settings) -> "ServiceLimits":
        """The limits ``settings`` set (chunk_size as set; lowered once Triton's max_batch_size is known)."""
        return cls(**{f.name: getattr(settings, "max_documents" if f.name == "max_documents_per_request" else f.name)
                      for f in fields(cls)})


@dataclass
class ServiceInfo:
    """The whole service: its models (the default first), Triton endpoints, limits and version."""

    models: list[ModelDescription]
    triton_endpoints: tuple[str, ...]
    limits: ServiceLimits
    version: str
    auth_required: bool

    @property
    def default(self) -> ModelDescription:
        return self.models[0]
