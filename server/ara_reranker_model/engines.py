"""Inference engines behind the scorer (scoring.py, model.py's compute): each turns padded token arrays into one
float32 logit per row.

``torch`` is the reference engine (transformers ``AutoModelForSequenceClassification``); ``onnx``
runs the graph exported by ``make model`` with ONNX Runtime. Both are held to the same score-parity
tests. Nothing here is Triton-specific, so the engines are also used in-process (benchmarks, tests).

Precision is the ``dtype`` parameter. ``auto`` (the default) is float32 on CPU; on GPU float16 with torch,
float32 with onnx. Lower precisions are opt-in, each on the device it is for, and trade score parity for
speed (their drift in ranking terms: bench/precision.py, docs/precision.md):

=========  ==========================================  =====================================================
engine     CPU                                         GPU (cuda)
=========  ==========================================  =====================================================
torch      float32; bfloat16                           float16 (auto); bfloat16; float32
onnx       float32; int8 (dynamic quantization)        float32; float16 (CUDA execution provider)
=========  ==========================================  =====================================================

float16 on CPU is refused: both frameworks emulate it there, slower than float32 and less exact.

Models that read token type ids (BERT-style, ``type_vocab_size > 1``: ms-marco MiniLM) must be given the
tokenizer's ``token_type_ids``; models with one type (XLM-R, RoBERTa) are run without them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from ara_reranker_model.files import TORCH_DTYPES, graph_dtype, graph_path, served_precision
from ara_reranker_model.limits import input_names, takes_token_type_ids

__all__ = ["Engine", "ENGINES", "load_engine"]


class Engine(Protocol):
    """What the scorer needs from an engine."""

    config: object  # the transformers PretrainedConfig of the model
    takes_token_type_ids: bool  # whether forward() needs token_type_ids (type_vocab_size > 1)

    def forward(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray | None = None
    ) -> np.ndarray:
        """Float32 logits [rows] for right-padded int64 [rows, length] arrays. ``token_type_ids`` is
        required when ``takes_token_type_ids``, ignored otherwise."""


def _refuse_cpu_float16(engine: str, device: str, allow: bool) -> None:
    """float16 is a GPU precision: on CPU it is emulated, slower than float32, so it is no serving option.
    ``allow`` lets the drift benchmark estimate GPU float16 numerics on a CPU all the same."""
    if not device.startswith("cuda") and not allow:
        other = "bfloat16" if engine == "torch" else "int8"
        raise ValueError(
            f"dtype float16 runs on GPU (device cuda) only: on {device} {engine} emulates it, slower than float32; "
            f"use float32 or {other}"
        )


def _token_types(engine: Engine, token_type_ids: np.ndarray | None) -> np.ndarray | None:
    """What to feed as token_type_ids: the given ones to a model that reads them, None to one that does not.

    Never zeros in their place: transformers would accept that and silently score the document as query."""
    if not engine.takes_token_type_ids:
        return None
    if token_type_ids is None:
        raise ValueError("this model reads token type ids (type_vocab_size > 1): pass token_type_ids")
    return token_type_ids


class TorchEngine:
    """transformers model in inference mode: fp16 on CUDA by default, fp32 on CPU; bf16 opt-in on both.

    ``allow_cpu_float16`` (benchmarks only) runs float16 on a CPU, emulated, to estimate its drift."""

    def __init__(self, model_dir: Path, device: str, dtype: str, num_threads: int, *, allow_cpu_float16: bool = False) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification

        if dtype != "auto" and dtype not in TORCH_DTYPES:
            raise ValueError(f"dtype must be auto, float32, float16 or bfloat16; got {dtype!r}")
        precision = served_precision("torch", dtype, device.startswith("cuda"))
        if precision == "float16":
            _refuse_cpu_float16("torch", device, allow_cpu_float16)
        if num_threads > 0:
            torch.set_num_threads(num_threads)
        self._torch = torch
        self.device = torch.device(device)
        self.dtype = getattr(torch, precision)
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=self.dtype)
        self.model = model.to(self.device).eval()
        self.config = model.config
        self.takes_token_type_ids = takes_token_type_ids(self.config.to_dict())

    def forward(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray | None = None
    ) -> np.ndarray:
        torch = self._torch
        types = _token_types(self, token_type_ids)
        with torch.inference_mode():
            inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if types is not None:
                inputs["token_type_ids"] = types
            tensors = {k: torch.from_numpy(v).to(self.device, non_blocking=True) for k, v in inputs.items()}
            logits = self.model(**tensors).logits
            # Upcast before leaving the engine: the sigmoid downstream is computed in float32.
            return logits[:, 0].float().cpu().numpy()


class OnnxEngine:
    """ONNX Runtime on ``<model_dir>/onnx/model.onnx``, the graph that ``make model ... ENGINE=onnx``
    (onnx_export.py) exports and verifies against torch; its place is files.py's.

    float32 by default: its logits equal the torch engine's within 1e-4. Opt-in, graphs derived from it
    (``make model ... ENGINE=onnx DTYPE=int8|float16``): ``int8``, dynamically quantized, on CPU; ``float16``
    on GPU. CPU execution provider on CPU; on ``cuda:N`` the CUDA execution provider (needs
    onnxruntime-gpu), or whatever ``providers`` lists (e.g. TensorRT). The keyword options exist for
    tuning and benchmarks."""

    GRAPH_LEVELS = ("disable", "basic", "extended", "all")

    def __init__(
        self,
        model_dir: Path,
        device: str,
        dtype: str,
        num_threads: int,
        *,
        providers: list | None = None,
        graph_optimization: str = "all",
        spin_wait: bool = False,
        allow_cpu_float16: bool = False,
    ) -> None:
        import onnxruntime as ort
        from transformers import AutoConfig

        precision = graph_dtype(dtype)
        if precision == "float16":
            _refuse_cpu_float16("onnx", device, allow_cpu_float16)
        if precision == "int8" and device.startswith("cuda"):
            # Dynamic quantization's MatMulInteger and DynamicQuantizeLinear are CPU execution provider kernels.
            raise ValueError("dtype int8 (dynamic quantization) runs on CPU only; on GPU use float16 or float32")
        path = graph_path(model_dir, precision)
        if not path.exists():
            option = "" if precision == "float32" else f" DTYPE={precision}"
            raise ValueError(
                f"{path} not found: export it with `make model MODEL=... ENGINE=onnx{option}` "
                f"(python -m ara_reranker_model.onnx_export {model_dir}{' --dtype ' + precision if option else ''})"
            )
        self.dtype = precision
        if graph_optimization not in self.GRAPH_LEVELS:
            raise ValueError(f"graph_optimization must be one of {self.GRAPH_LEVELS}; got {graph_optimization!r}")
        options = ort.SessionOptions()
        options.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[graph_optimization]
        if num_threads > 0:
            options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1  # one transformer layer after another: nothing to run in parallel
        # Idle worker threads spin by default, burning CPU between requests that the other processes of
        # a shared host (gateway, tokenizer, other instances) need; sleeping costs nothing measurable.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin_wait else "0")
        options.log_severity_level = 3  # errors only: the stub's log is Triton's log
        self.session = ort.InferenceSession(str(path), options, providers=providers or self.execution_providers(device))
        self.config = AutoConfig.from_pretrained(model_dir)
        self.takes_token_type_ids = takes_token_type_ids(self.config.to_dict())
        inputs = sorted(i.name for i in self.session.get_inputs())
        expected = sorted(input_names(self.config.to_dict()))
        if inputs != expected:
            raise ValueError(f"{path} takes inputs {inputs}, not {expected}: export it again")

    @staticmethod
    def execution_providers(device: str) -> list:
        """Execution providers for ``device``; ValueError rather than a fall back to CPU on a GPU node."""
        import onnxruntime as ort

        if not device.startswith("cuda"):
            return ["CPUExecutionProvider"]
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            found = ort.get_available_providers()
            raise ValueError(f"device {device} needs onnxruntime-gpu (CUDAExecutionProvider); found {found}")
        device_id = int(device.split(":")[1]) if ":" in device else 0
        return [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]

    def forward(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray | None = None
    ) -> np.ndarray:
        types = _token_types(self, token_type_ids)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if types is not None:
            inputs["token_type_ids"] = types
        feed = {k: np.ascontiguousarray(v, dtype=np.int64) for k, v in inputs.items()}
        (logits,) = self.session.run(["logits"], feed)
        return logits[:, 0].astype(np.float32, copy=False)


ENGINES = {"torch": TorchEngine, "onnx": OnnxEngine}


def load_engine(engine: str, model_dir: Path, device: str = "cpu", dtype: str = "auto", num_threads: int = 0,
                **options) -> Engine:
    """Build the named engine; ValueError names what is wrong with the choice. ``options``: the engine's
    keyword options (tuning and benchmarks)."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {sorted(ENGINES)}; got {engine!r}")
    return ENGINES[engine](Path(model_dir), device, dtype, num_threads, **options)
