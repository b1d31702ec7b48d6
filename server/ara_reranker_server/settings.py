"""The gateway's one settings object: every knob has a default, a doc, an env var and a flag.

Precedence: command-line flag > environment variable (``RERANKER_<FIELD>``) > default.
``python -m ara_reranker_server.gateway --help`` lists them all; docs/configuration.md's table is generated from the same docs.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, Mapping, Sequence

from ara_reranker_model.layout import TRITON_MODEL
from ara_reranker_model.limits import coupled_limit_problems

__all__ = ["Settings", "ENV_PREFIX", "model_entries", "model_routes", "setting_default"]

ENV_PREFIX = "RERANKER_"


def _knob(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


def setting_default(name: str) -> Any:
    """The default of the setting ``name``: the one place each is stated is its field below."""
    return Settings.__dataclass_fields__[name].default


@dataclass(frozen=True)
class Settings:
    """Gateway configuration (frozen; built once at start and passed in explicitly)."""

    listen: str = _knob("0.0.0.0:50051", "gRPC listen address (host:port)")
    triton_endpoints: tuple[str, ...] = _knob(
        ("localhost:8001",), "Triton gRPC endpoints, comma-separated (';'-separated when one is an ipv4:/ipv6: list); "
        "chunks are spread over them and retried on another when one fails. A dns:///name:port or ipv4:a:p,b:p target "
        "is balanced per request over every address it resolves to (round_robin; Kubernetes: a headless Service)"
    )
    models: tuple[str, ...] = _knob(
        (), "Served models as name=model_dir, or name:hub_id=model_dir to also answer to the hub id (Triton model = name), "
        "comma-separated; the first is the default and requests choose one by name. Empty: one model from tokenizer, "
        "triton_model and model_id"
    )
    model_endpoints: tuple[str, ...] = _knob(
        (), "Triton gRPC endpoints of single served models, as name=endpoint entries (a name repeated for several "
        "endpoints; ';'-separated when one is an ipv4:/ipv6: list): a model named here is scored only there, the others "
        "on triton_endpoints. Kubernetes: each model's own headless Service (deploy/k8s/overlays/multi-model)"
    )
    model_triton_models: tuple[str, ...] = _knob(
        (), "Triton model names of single served models, as name=triton_model entries; a model not named here is the "
        "Triton model of its own name (several-model form). Kubernetes: each model's own Triton serves it as ara_reranker"
    )
    triton_model: str = _knob(TRITON_MODEL, "Triton model name (one-model form)")
    tokenizer: str = _knob("models/ara-reranker-v1", "Directory (or hub id) of the served model's tokenizer (one-model form)")
    model_name: str = _knob(
        "", "Name the model is served under and requests choose it by (one-model form; default: model_id); model_id answers too"
    )
    model_id: str = _knob("", "Model id reported by Info and responses, also accepted as its name (one-model form; default: the tokenizer's model name)")
    max_input_length: int = _knob(
        0, "Max tokens of a (query, document) pair, special tokens included (0: the model's, its tokenizer's model_max_length); "
        "lower it to score faster, as CrossEncoder(model, max_length=512) does; above the model's is refused at start"
    )
    chunk_size: int = _knob(
        32, "Pairs per Triton request; bigger requests are split and sent concurrently (lowered to Triton's max_batch_size if above it)"
    )
    max_chunk_tokens: int = _knob(
        16384, "Padded tokens of one chunk at most (pairs x its longest pair): a chunk of long pairs holds fewer than "
        "chunk_size, so that no chunk is a long piece of work for the others to wait behind"
    )
    dispatch_window_tokens: int = _knob(
        32768, "Padded tokens of chunks at Triton and not yet answered, per model; further chunks wait in the gateway, "
        "interactive before batch and requests taking turns, and are never sent if their call ends first (0: no bound). "
        "Enough to keep Triton's instances busy: a few times their max_batch_tokens, times the Triton replicas"
    )
    dispatch_reserve_tokens: int = _knob(
        8192, "A lane beside dispatch_window_tokens for interactive requests that fit in one chunk, in padded tokens: they "
        "go to Triton at once rather than wait for large requests' chunks (0: none)"
    )
    dispatch_window_chunks: int = _knob(
        -1, "Chunks of large requests (those cut into several chunks) at Triton at once, per model and Triton endpoint: "
        "-1 (auto) one fewer than the Triton model's instances, so that one instance stays free for other calls and no "
        "small call waits for a large request's forward pass (no bound when the model has one instance); 0: no bound"
    )
    batch_share: int = _knob(8, "While batch requests wait, at least one chunk in every batch_share dispatched to the model is theirs")
    max_documents: int = _knob(1000, "Max documents per Rerank request")
    max_query_chars: int = _knob(8192, "Max characters of the query")
    max_document_chars: int = _knob(65536, "Max characters of one document")
    max_windows_per_request: int = _knob(
        10000, "Max windows of one TRUNCATION_SPLIT request, all documents together (also the most max_windows a request may ask per document)"
    )
    max_message_bytes: int = _knob(32 * 1024 * 1024, "Max gRPC message size accepted and sent, and max HTTP body, in bytes")
    max_inflight_pairs: int = _knob(8192, "Pairs admitted at once across all calls; beyond it RESOURCE_EXHAUSTED at once")
    max_inflight_tokens: int = _knob(
        1 << 21, "Tokens admitted to Triton at once across all calls; beyond it RESOURCE_EXHAUSTED at once "
        "(a request larger than this runs only when nothing else is in flight)"
    )
    max_concurrent_rpcs: int = _knob(512, "RPCs served at once (gRPC refuses more with RESOURCE_EXHAUSTED before reading them)")
    score_cache_mb: int = _knob(
        128, "Memory for cached scores of (query, document) pairs, shared by the served models (MiB, ~400 bytes a pair; "
        "0 disables): a repeated pair is answered without the model"
    )
    score_cache_ttl_s: float = _knob(3600.0, "How long a cached score is used (seconds); restart the gateway after swapping weights in place")
    default_timeout_s: float = _knob(60.0, "Bound on a call's Triton work when the client sets no deadline (seconds)")
    tokenizer_threads: int = _knob(1, "Threads tokenizing off the event loop, per worker (leave cores to the model on small machines)")
    workers: int = _knob(
        1, "Gateway processes serving the same ports (SO_REUSEPORT), each with its own event loop, tokenizer and Triton "
        "channels; /metrics sums them per worker label. One per core of the gateway's pod (0: one per core it may use). "
        "The in-flight bounds, the dispatch window and the score cache are each worker's own"
    )
    reuse_port: bool = _knob(
        False, "Share the gRPC and HTTP ports with other processes (SO_REUSEPORT); the workers of one gateway set it"
    )
    health_interval_s: float = _knob(1.0, "How often Triton's model readiness is polled (seconds)")
    health_failures: int = _knob(
        3, "Consecutive failed polls or calls before a Triton endpoint counts as down (one success brings it back)"
    )
    reload_failed_models: bool = _knob(
        True, "Reload a model whose instance stops computing (its Python-backend stub killed, e.g. by the OOM killer) "
        "through Triton's repository API, with backoff (Triton started with --model-control-mode=explicit, as make run, "
        "compose and the Kubernetes manifests do); the endpoint is out of rotation until a probe inference succeeds"
    )
    http_listen: str = _knob(
        "0.0.0.0:8080", "HTTP address of the Cohere (/v1/rerank, /v2/rerank), Jina (/v1/rerank), TEI (/rerank, /info), "
        "NVIDIA NIM (/v1/ranking, /v1/models) and vLLM (/score, /rerank) APIs, /health and /openapi.json (host:port; "
        "empty disables); same TLS and API keys as gRPC"
    )
    metrics_listen: str = _knob("0.0.0.0:9464", "Prometheus /metrics address (host:port; empty disables)")
    api_keys: tuple[str, ...] = _knob((), "Accepted API keys (authorization: Bearer <key>), comma-separated; empty: no auth")
    tls_cert: str = _knob("", "PEM certificate chain file: serve TLS when set (with tls_key)")
    tls_key: str = _knob("", "PEM private key file for tls_cert")
    tls_client_ca: str = _knob("", "PEM CA bundle: require client certificates signed by it (mutual TLS)")
    drain_s: float = _knob(0.0, "On SIGTERM, how long to keep serving while health says NOT_SERVING, so load balancers stop routing here first (seconds)")
    grace_period_s: float = _knob(10.0, "On SIGTERM, then, how long calls in flight may take to finish while new calls are refused (seconds)")
    log_format: str = _knob("text", "Request log format: text or json")
    log_level: str = _knob("INFO", "Log level")
    log_documents: bool = _knob(False, "Log query and document text (off: logs carry counts, never text or keys)")

    def __post_init__(self) -> None:
        checks = {  # setting -> (holds, what it must be)
            "chunk_size": (self.chunk_size > 0, "> 0"),
            "max_chunk_tokens": (self.max_chunk_tokens > 0, "> 0"),
            "dispatch_window_tokens": (self.dispatch_window_tokens >= 0, ">= 0 (0: no bound)"),
            "dispatch_window_chunks": (self.dispatch_window_chunks >= -1, ">= -1 (-1: auto, 0: no bound)"),
            "batch_share": (self.batch_share >= 1, ">= 1"),
            "dispatch_reserve_tokens": (self.dispatch_reserve_tokens >= 0, ">= 0 (0: none)"),
            "max_documents": (self.max_documents > 0, "> 0"),
            "max_query_chars": (self.max_query_chars > 0, "> 0"),
            "max_document_chars": (self.max_document_chars > 0, "> 0"),
            "max_message_bytes": (self.max_message_bytes > 0, "> 0"),
            "max_windows_per_request": (self.max_windows_per_request > 0, "> 0"),
            "max_inflight_tokens": (self.max_inflight_tokens > 0, "> 0"),
            "max_concurrent_rpcs": (self.max_concurrent_rpcs > 0, "> 0"),
            "max_input_length": (self.max_input_length >= 0, ">= 0 (0: the model's)"),
            "models": (all(_model_entry(m) for m in self.models), "name=model_dir entries"),
            "model_endpoints": (all(_assignment(e) for e in self.model_endpoints), "name=endpoint entries"),
            "model_triton_models": (all(_assignment(e) for e in self.model_triton_models), "name=triton_model entries"),
            "default_timeout_s": (self.default_timeout_s > 0, "> 0"),
            "score_cache_mb": (self.score_cache_mb >= 0, ">= 0 (0 disables)"),
            "score_cache_ttl_s": (self.score_cache_ttl_s > 0, "> 0"),
            "tokenizer_threads": (self.tokenizer_threads > 0, "> 0"),
            "workers": (self.workers >= 0, ">= 0 (0: one per core)"),
            "health_interval_s": (self.health_interval_s > 0, "> 0"),
            "health_failures": (self.health_failures > 0, "> 0"),
            "drain_s": (self.drain_s >= 0, ">= 0"),
            "grace_period_s": (self.grace_period_s >= 0, ">= 0"),
            "triton_endpoints": (len(self.triton_endpoints) > 0, "at least one"),
            "log_format": (self.log_format in ("text", "json"), "text or json"),
            "tls_key": (bool(self.tls_cert) == bool(self.tls_key), "set together with tls_cert"),
            "tls_client_ca": (not self.tls_client_ca or bool(self.tls_cert), "set only with tls_cert"),
        }
        bad = [f"{name}={getattr(self, name)!r} (must be {rule})" for name, (ok, rule) in checks.items() if not ok]
        # Limits coupled with others (ara_reranker_model.limits.COUPLED_LIMITS): here, those between settings.
        bad += coupled_limit_problems({f.name: getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), int)})
        if bad:
            raise ValueError(f"invalid settings: {'; '.join(bad)}")

    @classmethod
    def docs(cls) -> list[tuple[str, str, Any, str]]:
        """(field, env var, default, doc) for every knob."""
        return [(f.name, ENV_PREFIX + f.name.upper(), f.default, f.metadata["doc"]) for f in fields(cls)]

    @classmethod
    def markdown_table(cls) -> str:
        """The settings table of docs/configuration.md (``make docs`` writes it; ``python -m ara_reranker_server.settings`` prints it)."""
        rows = ["| env | flag | default | meaning |", "|---|---|---|---|"]
        rows += [f"| `{env}` | `--{name.replace('_', '-')}` | `{_show(default)}` | {doc} |" for name, env, default, doc in cls.docs()]
        return "\n".join(rows)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _parse(f.default, raw)
        return cls(**values)

    @classmethod
    def from_args(cls, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> "Settings":
        """Flags over env vars over defaults."""
        base = cls.from_env(environ)
        from ara_reranker_server import __version__

        parser = argparse.ArgumentParser(description="ARA reranker gRPC gateway")
        parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
        for name, env, default, doc in cls.docs():
            parser.add_argument("--" + name.replace("_", "-"), dest=name, default=None, help=f"{doc} [env {env}; default {_show(default)}]")
        args = parser.parse_args(argv)
        overrides = {
            f.name: _parse(f.default, getattr(args, f.name)) for f in fields(cls) if getattr(args, f.name) is not None
        }
        return replace(base, **overrides)


def _model_entry(entry: str) -> tuple[str, str, str] | None:
    """``name[:hub_id]=model_dir`` -> (name, hub_id or "", model_dir); None when malformed."""
    key, sep, path = entry.partition("=")
    name, _, hub_id = key.partition(":")
    return (name.strip(), hub_id.strip(), path.strip()) if sep and name.strip() and path.strip() else None


def model_entries(settings: "Settings") -> list[tuple[str, str, str]]:
    """The served models' (name, hub id or "", model_dir), the default first."""
    return [_model_entry(m) for m in settings.models]  # type: ignore[misc]


def _assignment(entry: str) -> tuple[str, str] | None:
    """``name=value`` -> (name, value); None when either is empty."""
    name, sep, value = entry.partition("=")
    return (name.strip(), value.strip()) if sep and name.strip() and value.strip() else None


def model_routes(settings: "Settings") -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    """Per served model named in model_endpoints / model_triton_models: its own endpoints (in order) and Triton model."""
    endpoints: dict[str, tuple[str, ...]] = {}
    for name, endpoint in map(_assignment, settings.model_endpoints):  # type: ignore[misc]
        endpoints[name] = endpoints.get(name, ()) + (endpoint,)
    return endpoints, dict(map(_assignment, settings.model_triton_models))  # type: ignore[arg-type]


def _parse(default: Any, raw: str) -> Any:
    if isinstance(default, bool):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(default, tuple):
        # gRPC's ipv4:/ipv6: targets list their addresses with commas: then ';' separates the items.
        separator = ";" if ";" in raw or raw.strip().startswith(("ipv4:", "ipv6:")) else ","
        return tuple(part.strip() for part in raw.split(separator) if part.strip())
    if default is MISSING:
        return raw
    return type(default)(raw)


def _show(default: Any) -> str:
    if isinstance(default, tuple):
        return ",".join(default) or "(none)"
    return repr(default) if default == "" else str(default)


if __name__ == "__main__":
    print(Settings.markdown_table())
