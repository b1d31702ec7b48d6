"""Inference engines behind model.py: each turns padded token arrays into one float32 logit per row.

``torch`` is the reference engine (transformers ``AutoModelForSequenceClassification``); ``onnx``
runs the graph exported by ``make model`` with ONNX Runtime. Both are held to the same score-parity
tests. Nothing here is Triton-specific, so the engines are also used in-process (benchmarks, tests).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

__all__ = ["Engine", "ENGINES", "load_engine"]

ONNX_FILE = "onnx/model.onnx"


class Engine(Protocol):
    """What model.py needs from an engine."""

    config: object  # the transformers PretrainedConfig of the model

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Float32 logits [rows] for right-padded int64 [rows, length] arrays."""


class TorchEngine:
    """transformers model in inference mode: fp16 on CUDA by default, fp32 on CPU."""

    DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}

    def __init__(self, model_dir: Path, device: str, dtype: str, num_threads: int) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification

        if num_threads > 0:
            torch.set_num_threads(num_threads)
        if dtype == "auto":
            dtype = "float16" if device.startswith("cuda") else "float32"
        if dtype not in self.DTYPES:
            raise ValueError(f"dtype must be auto, float32, float16 or bfloat16; got {dtype!r}")
        self._torch = torch
        self.device = torch.device(device)
        self.dtype = getattr(torch, self.DTYPES[dtype])
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=self.dtype)
        self.model = model.to(self.device).eval()
        self.config = model.config

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            ids = torch.from_numpy(input_ids).to(self.device, non_blocking=True)
            mask = torch.from_numpy(attention_mask).to(self.device, non_blocking=True)
            logits = self.model(input_ids=ids, attention_mask=mask).logits
            # Upcast before leaving the engine: the sigmoid downstream is computed in float32.
            return logits[:, 0].float().cpu().numpy()


class OnnxEngine:
    """ONNX Runtime session on the graph exported by ``make model`` (``<model_dir>/onnx/model.onnx``)."""

    def __init__(self, model_dir: Path, device: str, dtype: str, num_threads: int) -> None:
        import onnxruntime as ort
        from transformers import AutoConfig

        path = model_dir / ONNX_FILE
        if not path.exists():
            raise ValueError(f"{path} not found: export it with `make model MODEL=... ENGINE=onnx`")
        if dtype not in ("auto", "float32", "fp32"):
            raise ValueError(f"the onnx engine computes in float32; dtype {dtype!r} is not offered")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if num_threads > 0:
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            device_id = int(device.split(":")[1]) if ":" in device else 0
            providers = [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.config = AutoConfig.from_pretrained(model_dir)

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feed = {"input_ids": input_ids, "attention_mask": attention_mask}
        (logits,) = self.session.run(["logits"], {k: v for k, v in feed.items() if k in self.input_names})
        return logits[:, 0].astype(np.float32, copy=False)


ENGINES = {"torch": TorchEngine, "onnx": OnnxEngine}


def load_engine(engine: str, model_dir: Path, device: str = "cpu", dtype: str = "auto", num_threads: int = 0) -> Engine:
    """Build the named engine; ValueError names what is wrong with the choice."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {sorted(ENGINES)}; got {engine!r}")
    return ENGINES[engine](Path(model_dir), device, dtype, num_threads)
