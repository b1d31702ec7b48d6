"""Where the files of a model directory live, for the code that reads them at run time.

The onnx engine (model_repository/ara_reranker/1/engines.py, inside Triton) loads the graph that the ONNX
export (tools/onnx_export.py) writes; both take its place from here, so the Triton model never imports
tooling. Plain Python on purpose: Triton's Python backend imports it.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["ONNX_DIR", "ONNX_FILE", "onnx_path"]

ONNX_DIR = "onnx"
ONNX_FILE = "model.onnx"


def onnx_path(model_dir: Path | str) -> Path:
    """The exported graph of ``model_dir``: ``<model_dir>/onnx/model.onnx``."""
    return Path(model_dir) / ONNX_DIR / ONNX_FILE
