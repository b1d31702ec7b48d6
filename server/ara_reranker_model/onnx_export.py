"""Export a Hugging Face cross-encoder to ONNX for the ``onnx`` engine of the Triton model.

``export_onnx(model_dir)`` writes ``<model_dir>/onnx/model.onnx`` (``make model ... ENGINE=onnx`` runs it):

1. trace ``AutoModelForSequenceClassification`` (fp32, eager attention) with torch's TorchScript
   exporter, dynamic batch and sequence axes, opset 17. Inputs ``input_ids``, ``attention_mask`` and, for
   models that read token types (BERT-style, ``type_vocab_size > 1``), ``token_type_ids``. The dynamo exporter also works with torch
   2.13, but ONNX Runtime's fusions do not recognise its attention subgraph, so it runs slower;
2. fuse with ``onnxruntime.transformers`` (``bert`` patterns, which cover RoBERTa / XLM-R):
   Attention, SkipLayerNormalization, BiasGelu; weights stay float32; the graph stays portable
   across execution providers (no provider-specific offline optimization);
3. run the exported graph and torch on a few padded batches of random tokens (and query/document token
   types), up to the model's maximum length, and refuse to install it (``OnnxExportError``) if any logit differs by more
   than ``PARITY_ATOL``.

Low-precision graphs, opt-in (``export_onnx(model_dir, dtype=...)``, ``make model ... ENGINE=onnx DTYPE=...``),
are derived from that float32 graph and written beside it (``graph_path``):

* ``int8``: ONNX Runtime's dynamic quantization (``quantize_dynamic``, its defaults: int8 weights per tensor,
  activations quantized on the fly), what CPU deployments of rerankers commonly run; CPU execution provider;
* ``float16``: ``onnxruntime.transformers``' float16 conversion with float32 inputs and outputs
  (``keep_io_types``), for the CUDA execution provider.

They are lossy by design: their largest logit difference from torch float32 on the probe batches is recorded
in ``onnx/export.<dtype>.json`` but not held to ``PARITY_ATOL``; what the loss costs in ranking terms is
measured by ``bench/precision.py``.

Concurrent exports of one model directory are serialised by a lock file and each file is moved into
place atomically, so a reader never sees half a graph; ``onnx/export.json`` is written last and
records what was exported, so a second call with the same weights and versions returns at once.

The real model (568M parameters, 2.2 GB in fp32) exports in about 2 minutes on 2 cores and needs
about 16 GB of memory during the fusions; ``--no-optimize`` needs about 4 GB, and ONNX Runtime applies
the same fusions itself when it loads the graph (measured: same speed on CPU), so use it where memory
is short.

``python -m ara_reranker_model.onnx_export models/small [--no-optimize] [--force] [--dtype int8|float16]``
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gc
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from ara_reranker_model.files import DTYPES, GRAPH_FILES, ONNX_FILE, graph_dtype, onnx_path
from ara_reranker_model.inputs import PAD_TOKEN_TYPE, padded_rows
from ara_reranker_model.limits import ROBERTA_LIKE, input_names, max_positions

__all__ = ["PARITY_ATOL", "OnnxExportError", "export_onnx"]

# Where each graph lives (onnx_path, graph_path) and the precisions (DTYPES) are defined in
# server/ara_reranker_model/files.py, which the onnx engine reads too.
MANIFEST_FILE = "export.json"
LOCK_FILE = ".export.lock"
OPSET = 17  # first opset with LayerNormalization; every ONNX Runtime since 1.14 runs it
PARITY_ATOL = 1e-4  # largest |onnx - torch| logit difference accepted, the service's parity bound
# Protobuf cannot serialise one message over 2 GiB: larger models (ARA-Reranker-V1 itself is 2.2 GB
# in fp32) keep their weights in one external data file beside the graph.
EXTERNAL_DATA_BYTES = 1 << 30


class OnnxExportError(RuntimeError):
    """The export failed or the exported graph does not reproduce torch's logits."""


def export_onnx(model_dir: Path, optimize: bool = True, *, force: bool = False, dtype: str = "float32") -> Path:
    """Export ``model_dir`` to ``<model_dir>/onnx/model.onnx``, verified against torch, and with ``dtype``
    int8 or float16 derive that graph from it too; return the path of the ``dtype`` graph.

    ``optimize`` applies ONNX Runtime's transformer fusions. An export already made from the same
    weights, options and library versions is kept unless ``force``. Safe to call from several
    processes at once."""
    precision = graph_dtype(dtype)
    target = _export_float32(Path(model_dir).resolve(), optimize, force)
    if precision == "float32":
        return target
    return _derive(target.parent, precision, force)


def _export_float32(model_dir: Path, optimize: bool, force: bool) -> Path:
    """The float32 graph, exported and verified unless a current one is there."""
    if not (model_dir / "config.json").exists():
        raise OnnxExportError(f"{model_dir} has no config.json: prepare it first (make model MODEL=...)")
    target = onnx_path(model_dir)
    out_dir = target.parent
    out_dir.mkdir(exist_ok=True)
    with _locked(out_dir / LOCK_FILE):
        fingerprint = _fingerprint(model_dir, optimize)
        if not force and target.exists() and _manifest(out_dir).get("source") == fingerprint:
            return target
        with tempfile.TemporaryDirectory(prefix=".export-", dir=out_dir) as tmp, _quiet_loading():
            started = time.perf_counter()
            staged, max_diff = _export_verified(model_dir, Path(tmp), optimize)
            (out_dir / MANIFEST_FILE).unlink(missing_ok=True)  # stale from here until the new one lands
            _install(staged, out_dir)
            manifest = {
                "source": fingerprint,
                "max_abs_diff_vs_torch": max_diff,
                "parity_atol": PARITY_ATOL,
                "seconds": round(time.perf_counter() - started, 2),
            }
            _atomic_write(out_dir / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")
    return target


def _export_verified(model_dir: Path, tmp: Path, optimize: bool) -> tuple[list[Path], float]:
    """Trace, optionally fuse, and verify in ``tmp``; return the files to install and the max diff."""
    import torch
    from transformers import AutoModelForSequenceClassification

    # Eager attention traces into the MatMul/Softmax pattern that ORT fuses into one Attention op;
    # SDPA's mask handling does not fuse. Both compute the same function, which step 3 checks.
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    config = model.config
    external = sum(p.numel() * p.element_size() for p in model.parameters()) > EXTERNAL_DATA_BYTES
    traced = tmp / "traced" / ONNX_FILE
    traced.parent.mkdir()
    final = tmp / "final" / ONNX_FILE
    final.parent.mkdir()
    try:
        _trace(model, traced, config.pad_token_id or 0, input_names(config.to_dict()))
        del model  # free its weights before the graph's are loaded (the real model's are 2.2 GB)
        gc.collect()
        if optimize:
            _fuse(traced, final, config, external)
        else:
            _resave(traced, final, external)
    except Exception as exc:  # torch's and onnxruntime's errors vary; all mean "no graph"
        raise OnnxExportError(f"exporting {model_dir} to ONNX failed: {type(exc).__name__}: {exc}") from exc
    shutil.rmtree(traced.parent)
    gc.collect()  # the fusions hold several copies of the weights in reference cycles
    max_diff = _verify(final, model_dir)
    files = sorted(final.parent.iterdir(), key=lambda p: p.name == ONNX_FILE)  # the graph last
    for path in files:
        path.chmod(0o644)  # Triton may run as another user than the one who exported
    return files, max_diff


def _derive(out_dir: Path, precision: str, force: bool) -> Path:
    """Make the ``precision`` graph from the float32 one in ``out_dir`` (kept when already made from it)."""
    model_dir = out_dir.parent
    target = out_dir / GRAPH_FILES[precision]
    manifest_file = out_dir / f"export.{precision}.json"
    with _locked(out_dir / LOCK_FILE):
        source = {"float32": _manifest(out_dir).get("source"), "recipe": DERIVED_RECIPES[precision]}
        if not force and target.exists() and _manifest(out_dir, manifest_file.name).get("source") == source:
            return target
        with tempfile.TemporaryDirectory(prefix=".export-", dir=out_dir) as tmp:
            started = time.perf_counter()
            staged = Path(tmp) / target.name
            try:
                (_quantize_int8 if precision == "int8" else _convert_float16)(out_dir / ONNX_FILE, staged)
            except Exception as exc:  # onnxruntime's tools raise what they like; all mean "no graph"
                raise OnnxExportError(f"making the {precision} graph of {model_dir} failed: {type(exc).__name__}: {exc}") from exc
            with _quiet_loading():
                max_diff = _verify(staged, model_dir, lossy=True, providers=_providers_for(precision))
            staged.chmod(0o644)
            manifest_file.unlink(missing_ok=True)
            os.replace(staged, target)
            manifest = {"source": source, "max_abs_diff_vs_torch_float32": max_diff,
                        "seconds": round(time.perf_counter() - started, 2)}
            _atomic_write(manifest_file, json.dumps(manifest, indent=2) + "\n")
    return target


LOSSY_PROBE_TOKENS = 512  # longest probe row when verifying a derived (int8, float16) graph
# How each low-precision graph is made: part of its fingerprint, so that a change of recipe remakes it.
DERIVED_RECIPES = {
    "int8": "onnxruntime.quantization.quantize_dynamic(weight_type=QInt8, per_tensor)",
    "float16": "onnxruntime.transformers OnnxModel.convert_float_to_float16(keep_io_types=True)",
}


def _providers_for(precision: str) -> list[str]:
    """Where to verify a derived graph: float16 on CUDA when there is one (ONNX Runtime's CPU kernels
    emulate float16, slowly), int8 on the CPU (its execution provider)."""
    import onnxruntime as ort

    if precision == "float16" and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _quantize_int8(source: Path, target: Path) -> None:
    """ONNX Runtime's dynamic quantization with its defaults (QInt8 weights, per tensor): tried here, its
    per-channel and reduced-range variants drifted further from float32 on these models."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The fused graph holds contrib ops (Attention, SkipLayerNormalization) that ONNX shape inference does
    # not type; their outputs are float32.
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


def _convert_float16(source: Path, target: Path) -> None:
    """Weights and compute in float16, inputs (token ids) and logits as before: float32 logits out."""
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(source)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.convert_float_to_float16(keep_io_types=True)
    # Half the float32 size: ARA-Reranker-V1's 2.2 GB become 1.1 GB, under protobuf's 2 GiB, so one file.
    model.save_model_to_file(str(target), use_external_data_format=False)


def _trace(model, path: Path, pad_id: int, names: list[str]) -> None:
    import torch

    # Two rows, one padded, so the traced mask arithmetic is the general one (ids: any in vocabulary).
    ids = torch.tensor([[0, 5, 6, 2, 2, 7, 8, 2], [0, 5, 2, 2, 7, 2, pad_id, pad_id]])
    mask = (torch.arange(ids.shape[1])[None, :] < torch.tensor([[8], [6]])).long()
    types = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1, 0, 0]])  # query 0, document 1
    args = (ids, mask, types)[: len(names)]  # token_type_ids only for models that read them
    axes = {0: "batch", 1: "sequence"}
    dynamic = {**{name: axes for name in names}, "logits": {0: "batch"}}
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter is deprecated and warns about data-dependent Python branches of
        # transformers' mask code that are constant for an encoder; the parity check is what counts.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, args, str(path), input_names=names, output_names=["logits"],
            dynamic_axes=dynamic, opset_version=OPSET, do_constant_folding=True, dynamo=False,
        )


def _fuse(source: Path, target: Path, config, external: bool) -> None:
    """ONNX Runtime's transformer fusions (Python only: the result runs on any execution provider)."""
    from onnxruntime.transformers.fusion_options import AttentionMaskFormat, FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    # Keep the 2-D attention mask as an input of the fused Attention: correct for any padding side,
    # whereas the 1-D "mask index" form silently assumes right padding.
    options.attention_mask_format = AttentionMaskFormat.AttentionMask
    # RoBERTa-likes derive position ids from input_ids (cumsum over non-pad tokens), which the BERT
    # EmbedLayerNormalization op does not do.
    options.enable_embed_layer_norm = config.model_type not in ROBERTA_LIKE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimized = optimize_model(
            str(source), model_type="bert", num_heads=config.num_attention_heads, hidden_size=config.hidden_size,
            optimization_options=options, opt_level=0, use_gpu=False,
        )
    stats = optimized.get_fused_operator_statistics()
    if stats.get("Attention", 0) + stats.get("MultiHeadAttention", 0) == 0:
        # Still correct (verified below), only slower: say so rather than fail.
        print(f"onnx_export: no attention fusion applied for {config.model_type}; fused ops: {stats}", file=sys.stderr)
    optimized.save_model_to_file(str(target), use_external_data_format=external, all_tensors_to_one_file=True)


def _resave(source: Path, target: Path, external: bool) -> None:
    """Copy the traced graph, gathering its weights into one file when they are external."""
    import onnx

    model = onnx.load(str(source))
    onnx.save_model(
        model, str(target), save_as_external_data=external, all_tensors_to_one_file=True, location=ONNX_FILE + ".data"
    )


def _verify(path: Path, model_dir: Path, lossy: bool = False, providers: list[str] | None = None) -> float:
    """Max |onnx - torch float32| logit over a few padded batches; OnnxExportError beyond PARITY_ATOL,
    unless the graph is ``lossy`` by design (int8, float16): then any finite difference is returned.
    Run on ``providers`` (default: the CPU execution provider)."""
    import onnxruntime as ort
    import torch
    from transformers import AutoModelForSequenceClassification

    reference = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
    session = ort.InferenceSession(str(path), providers=providers or ["CPUExecutionProvider"])
    worst = 0.0
    names = input_names(reference.config.to_dict())
    # A lossy graph is only checked to run and give finite logits here (bench/precision.py measures its
    # drift): rows up to 512 tokens spare the CPU a float16 emulation of 8,192-token attention (~10 GB).
    for batch in _probe_batches(reference.config, LOSSY_PROBE_TOKENS if lossy else None):
        feed = dict(zip(names, batch))  # token_type_ids only when the model reads them
        ids = feed["input_ids"]
        with torch.inference_mode():
            expected = reference(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.numpy()
        (actual,) = session.run(["logits"], feed)
        if actual.shape != expected.shape or not np.isfinite(actual).all():
            raise OnnxExportError(f"{path}: logits {actual.shape} for input {ids.shape}; torch gives {expected.shape}")
        diff = float(np.abs(actual - expected).max())
        worst = max(worst, diff)
        if diff > PARITY_ATOL and not lossy:
            raise OnnxExportError(
                f"{path} differs from torch by {diff:.3g} > {PARITY_ATOL} on input {list(ids.shape)}; not installed"
            )
    return worst


def _probe_batches(config, longest: int | None = None) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Right-padded int64 (input_ids, attention_mask, token_type_ids) batches of random tokens: one row,
    mixed lengths, and the longest allowed (or ``longest``); token type 0 for a random query prefix, 1 after it."""
    rng = np.random.default_rng(0)
    longest = min(longest or max_positions(config.to_dict()), max_positions(config.to_dict()))
    batches = []
    for lengths in ([5], [40, 33, 17, 3], [longest, 129, 1]):
        rows = [rng.integers(5, config.vocab_size, size=n) for n in lengths]
        type_rows = [(np.arange(n) >= rng.integers(0, n + 1)).astype(np.int64) for n in lengths]
        ids, mask = padded_rows(rows, config.pad_token_id or 0)
        batches.append((ids, mask, padded_rows(type_rows, PAD_TOKEN_TYPE)[0]))
    return batches


def _install(files: list[Path], out_dir: Path) -> None:
    """Move the staged files into place, the graph last: its rename is what readers see."""
    for source in files:
        os.replace(source, out_dir / source.name)
    if not any(f.name.endswith(".data") for f in files):
        (out_dir / (ONNX_FILE + ".data")).unlink(missing_ok=True)  # left over from an older, larger export


def _fingerprint(model_dir: Path, optimize: bool) -> dict:
    """What the export depends on: the weights and config (size, mtime) and the library versions."""
    import onnxruntime
    import torch
    import transformers

    weights = {".safetensors", ".bin"}
    sources = sorted(p for p in model_dir.iterdir() if p.is_file() and (p.suffix in weights or p.name == "config.json"))
    return {
        "files": {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in sources},
        "optimize": optimize,
        "inputs": input_names(json.loads((model_dir / "config.json").read_text())),
        "opset": OPSET,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def _manifest(out_dir: Path, name: str = MANIFEST_FILE) -> dict:
    try:
        return json.loads((out_dir / name).read_text())
    except (OSError, ValueError):
        return {}


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


@contextlib.contextmanager
def _quiet_loading():
    """No "Loading weights" progress bars for the two loads of the model (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive advisory lock held for the duration (released by the OS if the process dies)."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path, help="a prepared model directory, e.g. models/small")
    parser.add_argument("--no-optimize", dest="optimize", action="store_false", help="skip ONNX Runtime's fusions")
    parser.add_argument("--force", action="store_true", help="export again even if an export of these weights exists")
    parser.add_argument("--dtype", default="float32", choices=sorted(set(DTYPES.values())),
                        help="also derive this low-precision graph (int8: CPU, float16: GPU) from the float32 one")
    args = parser.parse_args(argv)
    try:
        path = export_onnx(args.model_dir, optimize=args.optimize, force=args.force, dtype=args.dtype)
    except OnnxExportError as exc:
        print(f"onnx export failed: {exc}", file=sys.stderr)
        return 1
    if args.dtype == "float32":
        diff = _manifest(path.parent).get("max_abs_diff_vs_torch", float("nan"))
    else:
        diff = _manifest(path.parent, f"export.{args.dtype}.json").get("max_abs_diff_vs_torch_float32", float("nan"))
    print(f"{path} (max |onnx - torch float32| = {diff:.2g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
