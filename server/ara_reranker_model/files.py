"""Where the files of a model directory live, for the code that reads them at run time.

The onnx engine (engines.py, inside Triton) loads the graphs that the ONNX export (onnx_export.py) writes; both
take their places from here, so the Triton model never imports tooling. Plain Python on purpose: Triton's Python backend imports it.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["ONNX_DIR", "ONNX_FILE", "GRAPH_FILES", "DTYPES", "TORCH_DTYPES", "onnx_path", "graph_dtype", "graph_path",
           "served_precision"]

ONNX_DIR = "onnx"
ONNX_FILE = "model.onnx"  # the float32 graph
# The graph of each precision, in ONNX_DIR; the low-precision ones are derived from the float32 one.
GRAPH_FILES = {"float32": ONNX_FILE, "int8": "model.int8.onnx", "float16": "model.fp16.onnx"}
# Accepted spellings of each precision (the onnx engine's ``dtype`` parameter); auto is float32 on every device.
DTYPES = {"auto": "float32", "float32": "float32", "fp32": "float32", "int8": "int8", "qint8": "int8",
          "float16": "float16", "fp16": "float16"}
# The torch engine's spellings; its auto is float16 on GPU and float32 on CPU.
TORCH_DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
                "bfloat16": "bfloat16", "bf16": "bfloat16"}


def onnx_path(model_dir: Path | str) -> Path:
    """The exported float32 graph of ``model_dir``: ``<model_dir>/onnx/model.onnx``."""
    return Path(model_dir) / ONNX_DIR / ONNX_FILE


def graph_dtype(dtype: str) -> str:
    """The precision a ``dtype`` spelling names (float32, int8 or float16); ValueError for others."""
    if dtype not in DTYPES:
        raise ValueError(f"the onnx engine offers dtype {', '.join(DTYPES)}; got {dtype!r}")
    return DTYPES[dtype]


def graph_path(model_dir: Path | str, dtype: str = "float32") -> Path:
    """Where the graph of ``dtype`` (any spelling of ``DTYPES``) lives in ``model_dir``."""
    return Path(model_dir) / ONNX_DIR / GRAPH_FILES[graph_dtype(dtype)]


def served_precision(engine: str, dtype: str, on_gpu: bool) -> str:
    """The precision that ``engine`` runs for the ``dtype`` parameter (any spelling, or auto) on a GPU or
    not: what the engines load, for those who report it (Info) without loading anything. A spelling no
    engine accepts is returned as given (the model refuses to load with it)."""
    if engine == "onnx":
        return DTYPES.get(dtype, dtype)
    if dtype == "auto":
        return "float16" if on_gpu else "float32"
    return TORCH_DTYPES.get(dtype, dtype)
