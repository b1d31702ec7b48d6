"""Rankers: what scores a query's passages. The service (a gateway, through the generated client) or a
model run in-process with transformers, as the reference the service must equal.

A ``Ranker`` is any callable ``(query, documents) -> logits``, the model's logit for each document in the
original order; the harness ranks by them exactly as the gateway does (see ``metrics.rank_by_scores``).
Logits, not sigmoid scores: float32 sigmoids of different logits above ~16.6 are all exactly 1.0, and
ranking by them would break those ties by position instead of by the model.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ara_reranker_model.families import CROSS_ENCODER, QWEN3_RERANKER, family_of
from ara_reranker_model.limits import max_input_length

# The gateway evaluated when no target is named: RERANKER_TARGET, as the reranker CLI reads it, else make run's.
DEFAULT_GATEWAY = os.environ.get("RERANKER_TARGET", "127.0.0.1:50051")
LOCAL_PREFIX = "local:"


@dataclass(frozen=True)
class Truncation:
    """What the service does with documents longer than the model's input: "end" (cut), "none"
    (refuse) or "split" (score each window, rank by the best; the window fields shape them, the
    server's defaults when None). Passed to the service's rerank as is."""

    mode: str = "end"
    window_tokens: int | None = None
    window_overlap_tokens: int | None = None
    max_windows: int | None = None

    def options(self) -> dict:
        windows = {"window_tokens": self.window_tokens, "window_overlap_tokens": self.window_overlap_tokens,
                   "max_windows": self.max_windows}
        return {"truncation": self.mode} | {k: v for k, v in windows.items() if v is not None}


class Ranker(Protocol):
    """The model's logit for every document of one query; the i-th belongs to ``documents[i]``."""

    def __call__(self, query: str, documents: Sequence[str]) -> list[float]: ...


@dataclass(frozen=True)
class Target:
    """What to evaluate: a gateway (``host:port``: every model it serves, a row each; ``host:port/model``:
    that model, by its served name or hub id) or ``local:<model dir>``, with an optional display name
    (``name=target`` on the command line)."""

    spec: str
    name: str | None = None

    @property
    def is_local(self) -> bool:
        return self.spec.startswith(LOCAL_PREFIX)

    @property
    def location(self) -> str:
        """The gateway address or the model directory."""
        return self.spec[len(LOCAL_PREFIX) :] if self.is_local else self.spec.partition("/")[0]

    @property
    def model(self) -> str | None:
        """The gateway model named after the address (``host:port/model``), if any."""
        return None if self.is_local else (self.spec.partition("/")[2] or None)


def parse_targets(text: str | None) -> list[Target]:
    """``name=target,target,...`` into Targets; the default is the gateway of ``make run``."""
    targets = []
    for item in (text or DEFAULT_GATEWAY).split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, spec = item.partition("=")
        # "=" names a target only when what precedes it is a bare name, not part of an address or path.
        if sep and name and not any(c in name for c in ":/"):
            targets.append(Target(spec.strip(), name.strip()))
        else:
            targets.append(Target(item))
    if not targets:
        raise ValueError(f"no target in {text!r}: expected host:port or local:<model dir>, comma-separated")
    for target in targets:
        if not target.location:
            raise ValueError(f"empty target in {text!r}")
    return targets


class ServiceRanker:
    """Scores through the gateway with the generated client (``client.RerankerClient``, or anything with
    its ``rerank``). The client splits groups larger than the gateway's ``max_documents_per_request``;
    each pair's score does not depend on the rest of its request, so the scores equal one request's."""

    def __init__(self, client: Any, model: str | None = None, truncation: Truncation | None = None) -> None:
        self._client = client
        self.model = model
        self.truncation = truncation  # None: the client's default (cut at the end)

    def __call__(self, query: str, documents: Sequence[str]) -> list[float]:
        scores: list[float | None] = [None] * len(documents)
        for result in self._client.rerank(query, list(documents), model=self.model, **(self.truncation.options() if self.truncation else {})):
            scores[result.index] = float(result.logit)
        missing = [i for i, s in enumerate(scores) if s is None]
        if missing:
            raise RuntimeError(f"the service returned no score for documents {missing[:10]}")
        return scores  # type: ignore[return-value]


class LocalRanker:
    """The model in-process: transformers ``AutoModelForSequenceClassification``, the pair encoded with
    the document (never the query) truncated to the model's max input length (server/ara_reranker_model/limits.py), as the
    service and the model card's ``CrossEncoder.predict`` encode it; returns the logits (the service ranks by them).

    Pairs are sorted by length and run in padded batches; padding moves logits only at float32 rounding."""

    max_concurrency = 1  # torch already uses every core; threads would only contend

    def __init__(self, model_dir: Path | str, batch_size: int = 16) -> None:
        import torch  # imported here so that evaluating a gateway needs no torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self._torch = torch
        self.model_dir = Path(model_dir)
        if not self.model_dir.is_dir():  # else transformers takes it for a hub id and says so, confusingly
            raise FileNotFoundError(f"no model directory {self.model_dir} (fetch one with `make model MODEL=...`)")
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self.model = AutoModelForSequenceClassification.from_pretrained(self.model_dir).eval()
        if self.model.config.num_labels != 1:
            labels = self.model.config.num_labels
            raise ValueError(f"{self.model_dir}: a reranker has one output label, this model has {labels}")
        # The service's own rule, so that this reference cuts pairs where the gateway does.
        self.max_length = max_input_length(self.model_dir)
        self.batch_size = batch_size

    def __call__(self, query: str, documents: Sequence[str]) -> list[float]:
        # Whole encodings, not only input_ids: BERT-style rerankers (ms-marco MiniLM) need token_type_ids.
        encoded = [self.tokenizer(query, d, truncation="only_second", max_length=self.max_length) for d in documents]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]["input_ids"]))
        scores = [0.0] * len(documents)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            for i, score in zip(batch, self._score_ids([encoded[i] for i in batch])):
                scores[i] = score
        return scores

    def _score_ids(self, rows: list[Any]) -> list[float]:
        torch = self._torch
        padded = self.tokenizer.pad(rows, return_tensors="pt")
        with torch.inference_mode():
            return self.model(**padded).logits[:, 0].float().tolist()


class LocalQwen3Ranker:
    """A Qwen3-Reranker in-process by its model card's recipe (client/evaluation/recipes.py), the default instruction,
    prompts cut at the service's max input length (the recipe's 8192); returns logit("yes") - logit("no"), the logit
    the service ranks by. Documents go in left-padded batches of similar length."""

    max_concurrency = 1

    def __init__(self, model_dir: Path | str, batch_size: int = 8) -> None:
        from client.evaluation.recipes import Qwen3RerankerRecipe

        self.model_dir = Path(model_dir)
        self.recipe = Qwen3RerankerRecipe(self.model_dir, max_input_length(self.model_dir))
        self.batch_size = batch_size

    def __call__(self, query: str, documents: Sequence[str]) -> list[float]:
        order = sorted(range(len(documents)), key=lambda i: len(documents[i]))
        scores = [0.0] * len(documents)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            for i, logit in zip(batch, self.recipe.logits(query, [documents[i] for i in batch])):
                scores[i] = float(logit)
        return scores


def local_ranker(model_dir: Path | str) -> LocalRanker | LocalQwen3Ranker:
    """The in-process reference for the model of ``model_dir``, by its family (ara_reranker_model.families)."""
    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    family = family_of(json.loads(config_path.read_text())) if config_path.exists() else CROSS_ENCODER
    if family == CROSS_ENCODER:
        return LocalRanker(model_dir)
    if family == QWEN3_RERANKER:
        return LocalQwen3Ranker(model_dir)
    raise ValueError(f"{model_dir}: no in-process recipe for a {family} here; evaluate it through a gateway that serves it")


@contextlib.contextmanager
def open_rankers(target: Target, truncation: Truncation | None = None) -> Iterator[list[tuple[str, Ranker]]]:
    """The rankers of a target and their display names: one per model a gateway serves (its model id),
    or the one model a ``host:port/model`` target or a ``local:`` directory names. ``truncation``
    applies to gateways; the in-process model always cuts at the end."""
    if target.is_local:
        if truncation is not None and truncation.mode != "end":
            raise ValueError(f"local targets cut long documents at the end; truncation {truncation.mode!r} is the service's")
        ranker = local_ranker(target.location)
        yield [(target.name or f"{ranker.model_dir.name} (in-process)", ranker)]
        return
    from ara_reranker_client import (
        RerankerClient,  # the generated client; imported late so that local runs need no gRPC
    )

    with RerankerClient(target.location) as client:
        served = list(client.info().models)
        if target.model is not None:
            chosen = [m for m in served if target.model in (m.name, m.model_id, *m.aliases)]
            if not chosen:
                names = ", ".join(m.name for m in served)
                raise ValueError(f"{target.location} serves no model {target.model!r} (it serves {names})")
            served = chosen
        rankers = [(m.model_id or m.name, ServiceRanker(client, m.name, truncation)) for m in served]
        if target.name:
            rankers = [(target.name if len(rankers) == 1 else f"{target.name}/{name}", r) for name, r in rankers]
        yield rankers


@contextlib.contextmanager
def open_ranker(target: Target) -> Iterator[tuple[str, Ranker]]:
    """The one ranker of a target that names one model (the gateway's default when it names none)."""
    with open_rankers(target) as rankers:
        if target.is_local or target.model is not None or len(rankers) == 1:
            yield rankers[0]
            return
        yield next((name, r) for name, r in rankers)  # the default comes first
