"""The models a gateway serves: each one's tokenizer, reranking core and Triton scorer, found by name.

A request names a model by the name it is served under (``ara``, ``tiny``, ``bert-tiny``) or by its hub
id; an empty name means the default model (the first). Every model is its own Triton model (own dynamic
batcher, own instance group); the admission bounds are shared by all of them, fairly (``Admission``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from ara_reranker_model.families import CROSS_ENCODER, family_of
from ara_reranker_model.limits import ModelLimitError, max_input_length, takes_token_type_ids
from ara_reranker_server.admission import Admission
from ara_reranker_server.core_types import Limits
from ara_reranker_server.dispatch import Dispatcher
from ara_reranker_server.errors import ModelNotFound, StartupError
from ara_reranker_server.prompts import prompt_of
from ara_reranker_server.reranking import Reranker
from ara_reranker_server.score_cache import ScoreCache
from ara_reranker_server.service_info import ModelDescription
from ara_reranker_server.settings import Settings, model_entries, model_routes
from ara_reranker_server.tokenization import PairTokenizer
from ara_reranker_server.tracing import NO_TRACING, Tracing
from ara_reranker_server.triton_scorer import TritonScorer

__all__ = ["ModelSpec", "ServedModel", "ModelRegistry", "load_models", "load_tokenizer", "model_specs"]


@dataclass
class ServedModel:
    """One served model; ``info`` is what Info shows of it (dtype and engine filled in once Triton answers)."""

    name: str
    reranker: Reranker
    scorer: TritonScorer
    info: ModelDescription

    @property
    def aliases(self) -> tuple[str, ...]:
        return self.info.aliases

    @property
    def model_id(self) -> str:
        return self.info.model_id


class ModelRegistry:
    """Served models by name and alias, the default first."""

    def __init__(self, models: list[ServedModel]) -> None:
        self.models = models
        self.default = models[0]
        self._by_name: dict[str, ServedModel] = {}
        for model in models:
            for key in (model.name, *model.aliases):
                self._by_name.setdefault(key, model)

    def __iter__(self):
        return iter(self.models)

    def names(self) -> list[str]:
        """Every name a request may use (each model's name, then its aliases), the default model's first."""
        return list(self._by_name)

    def get(self, name: str) -> ServedModel:
        """The model called ``name`` (empty: the default); ModelNotFound naming the served ones otherwise."""
        if not name:
            return self.default
        model = self._by_name.get(name)
        if model is None:
            served = ", ".join(m.name for m in self.models)
            raise ModelNotFound(f"model {name[:200]!r} is not served here; served models: {served} (default {self.default.name})")
        return model


def load_tokenizer(source: str, requested_max_length: int, threads: int) -> PairTokenizer:
    """A served model's own fast tokenizer (tokenizer.json), the max pair length to use with it, and
    whether its pairs carry token type ids (config.json ``type_vocab_size`` > 1: BERT-style models).

    Read with the ``tokenizers`` library directly: the gateway needs neither transformers nor torch.
    The max input length is the model directory's (server/ara_reranker_model/limits.py: tokenizer_config.json's
    ``model_max_length``, checked against config.json's positions), lowered to ``requested_max_length``."""
    path = Path(source)
    if path.is_dir():
        if not (path / "tokenizer.json").exists():
            raise StartupError(f"{path} has no tokenizer.json (the model's fast tokenizer)")
        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        config = _json(path / "tokenizer_config.json")
        model_config = _json(path / "config.json")
        try:
            max_length = max_input_length(path, requested_max_length)
        except ModelLimitError as exc:
            raise StartupError(f"refusing to start: {exc}") from exc
    else:  # a hub id: no local files to read the limit from
        tokenizer = Tokenizer.from_pretrained(source)
        config, model_config = {}, {}
        if not requested_max_length:
            raise StartupError(f"{source} is not a local model directory: pass --max-input-length")
        max_length = requested_max_length
    pad_id = _token_id(tokenizer, config.get("pad_token") or ("[PAD]" if tokenizer.token_to_id("<pad>") is None else "<pad>"))
    types = takes_token_type_ids(model_config)
    try:
        family = family_of(model_config)
    except ValueError as exc:
        raise StartupError(f"refusing to start: {path}: {exc}") from exc
    prompt = prompt_of(family, tokenizer, max_length, _token_id(tokenizer, config.get("bos_token")))
    return PairTokenizer(tokenizer, max_length, pad_id if pad_id is not None else 0, threads, token_type_ids=types,
                         prompt=prompt)


def _token_id(tokenizer: Tokenizer, token) -> int | None:
    """The id of a token named in tokenizer_config.json (a string or an AddedToken's dict; None: none)."""
    if not token:
        return None
    return tokenizer.token_to_id(token["content"] if isinstance(token, dict) else token)


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


@dataclass(frozen=True)
class ModelSpec:
    """What one served model is made of: its name, model directory, Triton model, model id and Triton endpoints."""

    name: str
    directory: str
    triton_model: str
    model_id: str
    endpoints: tuple[str, ...]


def model_specs(settings: Settings) -> list[ModelSpec]:
    """Every served model's spec, the default first; StartupError when a per-model route names no served model."""
    if not settings.models:
        source = Path(settings.tokenizer)
        model_id = settings.model_id or (source.name if source.exists() else settings.tokenizer)
        return [ModelSpec(settings.model_name or model_id, settings.tokenizer, settings.triton_model, model_id, settings.triton_endpoints)]
    endpoints, triton_models = model_routes(settings)
    names = [name for name, _, _ in model_entries(settings)]
    unknown = sorted((set(endpoints) | set(triton_models)) - set(names))
    if unknown:
        raise StartupError(f"model_endpoints / model_triton_models name models that are not served: {unknown} (served: {names})")
    return [ModelSpec(name, path, triton_models.get(name, name), hub or name, endpoints.get(name, settings.triton_endpoints))
            for name, hub, path in model_entries(settings)]


def load_models(settings: Settings, tracing: Tracing = NO_TRACING) -> ModelRegistry:
    """Every served model's tokenizer, core and Triton scorer, sharing the admission bounds (and ``tracing``)."""
    specs = model_specs(settings)
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise StartupError(f"model names must differ: {names}")
    limits = Limits.of(settings)
    pairs = Admission(limits.max_inflight_pairs, "max_inflight_pairs", "pairs", names)
    tokens = Admission(limits.max_inflight_tokens, "max_inflight_tokens", "tokens", names)
    cache = ScoreCache(settings.score_cache_mb * 1024 * 1024, settings.score_cache_ttl_s)
    served = []
    for position, spec in enumerate(specs):
        name, directory, triton_model, model_id = spec.name, spec.directory, spec.triton_model, spec.model_id
        requested = settings.max_input_length if position == 0 else _capped(directory, settings.max_input_length)
        tokenizer = load_tokenizer(directory, requested, settings.tokenizer_threads)
        scorer = TritonScorer(spec.endpoints, triton_model, settings.health_interval_s,
                              settings.health_failures, settings.max_message_bytes, settings.reload_failed_models,
                              tracing=tracing)
        reranker = Reranker(tokenizer, scorer, limits, settings.default_timeout_s, name=name,
                            admission=pairs, token_admission=tokens, cache=cache, tracing=tracing,
                            dispatcher=Dispatcher(settings.dispatch_window_tokens, settings.batch_share,
                                                  settings.dispatch_reserve_tokens, max(settings.dispatch_window_chunks, 0)))
        aliases = tuple(a for a in {model_id} - {name})
        info = ModelDescription(
            name=name, model_id=model_id, aliases=aliases, triton_model=triton_model,
            max_input_length=tokenizer.max_length, is_default=position == 0, token_type_ids=tokenizer.token_type_ids,
            family=tokenizer.prompt.family if tokenizer.prompt is not None else CROSS_ENCODER,
            takes_instruction=tokenizer.takes_instruction,
        )
        served.append(ServedModel(name, reranker, scorer, info))
    return ModelRegistry(served)


def _capped(directory: str, requested: int) -> int:
    """max_input_length applies to the other models as a cap: never above what each model takes."""
    if not requested or not Path(directory).is_dir():
        return requested
    try:
        return min(requested, max_input_length(directory))
    except ModelLimitError:
        return requested  # load_tokenizer reports the model directory's own problem
