"""Inference engines behind the scorer (scoring.py, model.py's compute): each turns padded token arrays into one
float32 logit per row.

``torch`` is the reference engine (transformers ``AutoModelForSequenceClassification``); ``onnx``
runs the graph exported by ``make model`` with ONNX Runtime. Both are held to the same score-parity
tests. Nothing here is Triton-specific, so the engines are also used in-process (benchmarks, tests).

A causal-LM reranker (families.py: Qwen3-Reranker, bge-reranker-v2-gemma) runs on ``torch`` only, as
``AutoModelForCausalLM``: the decoder body, then, at each row's last attended position, the product with the
lm_head rows of its answer tokens alone (families.ANSWER_TOKENS), never the [rows, length, vocab] logits.

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

import json
import logging
from pathlib import Path
from typing import Protocol

import numpy as np

from ara_reranker_model.families import ANSWER_TOKENS, CROSS_ENCODER, family_of
from ara_reranker_model.files import TORCH_DTYPES, graph_dtype, graph_path, served_precision
from ara_reranker_model.limits import input_names, takes_token_type_ids

_log = logging.getLogger(__name__)

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


def _torch_precision(device: str, dtype: str, num_threads: int, allow_cpu_float16: bool):
    """(torch, device, dtype) of a torch engine; ValueError for a dtype it does not serve."""
    import torch

    if dtype != "auto" and dtype not in TORCH_DTYPES:
        raise ValueError(f"dtype must be auto, float32, float16 or bfloat16; got {dtype!r}")
    precision = served_precision("torch", dtype, device.startswith("cuda"))
    if precision == "float16":
        _refuse_cpu_float16("torch", device, allow_cpu_float16)
    if num_threads > 0:
        torch.set_num_threads(num_threads)
    return torch, torch.device(device), getattr(torch, precision)


class TorchEngine:
    """transformers model in inference mode: fp16 on CUDA by default, fp32 on CPU; bf16 opt-in on both.

    ``allow_cpu_float16`` (benchmarks only) runs float16 on a CPU, emulated, to estimate its drift."""

    def __init__(self, model_dir: Path, device: str, dtype: str, num_threads: int, *, allow_cpu_float16: bool = False) -> None:
        from transformers import AutoModelForSequenceClassification

        self._torch, self.device, self.dtype = _torch_precision(device, dtype, num_threads, allow_cpu_float16)
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


class TorchCausalLMEngine:
    """A causal-LM reranker in inference mode (precisions as TorchEngine): per row, the decoder's hidden state at its
    last attended position (rows are right-padded: index ``attention_mask.sum() - 1``; causal attention keeps the
    padding after it out of every real token) times the lm_head rows of the family's answer tokens, in float32:
    Qwen3-Reranker's logit("yes") - logit("no"), bge-reranker-v2-gemma's logit("Yes"). The answer tokens' ids come
    from the model directory's tokenizer; its pad id becomes the config's when the config has none (Qwen3's)."""

    def __init__(self, model_dir: Path, device: str, dtype: str, num_threads: int, *, allow_cpu_float16: bool = False) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch, self.device, self.dtype = _torch_precision(device, dtype, num_threads, allow_cpu_float16)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=self.dtype).to(self.device).eval()
        self.config = model.config
        self.family = family_of(self.config.to_dict())
        self.takes_token_type_ids = False
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.answer_ids = answer_token_ids(tokenizer, self.family, self.config.vocab_size)
        if self.config.pad_token_id is None:
            self.config.pad_token_id = tokenizer.pad_token_id
        answers = " - ".join(f"logit({t!r}, id {i})" for t, i in zip(ANSWER_TOKENS[self.family], self.answer_ids))
        self.scoring_rule = f"{model_dir.name} is a {self.family}: its logit is {answers} at each row's last position"
        _log.info(self.scoring_rule)
        head = model.get_output_embeddings()
        index = self._torch.tensor(self.answer_ids, device=self.device)
        self.head_weight = head.weight.detach().index_select(0, index).float()
        bias = getattr(head, "bias", None)
        self.head_bias = None if bias is None else bias.detach().index_select(0, index).float()
        # Gemma 2's final tanh cap of the logits (Gemma 1, bge-reranker-v2-gemma's base, has none).
        self.softcap = getattr(self.config, "final_logit_softcapping", None)
        self.body = model.get_decoder()

    def forward(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray | None = None
    ) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            ids = torch.from_numpy(input_ids).to(self.device, non_blocking=True)
            mask = torch.from_numpy(attention_mask).to(self.device, non_blocking=True)
            hidden = self.body(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            last = hidden[torch.arange(hidden.shape[0], device=self.device), mask.sum(dim=1) - 1]
            logits = torch.nn.functional.linear(last.float(), self.head_weight, self.head_bias)
            if self.softcap:
                logits = torch.tanh(logits / self.softcap) * self.softcap
            score = logits[:, 0] - logits[:, 1] if logits.shape[1] == 2 else logits[:, 0]
            return score.cpu().numpy()


def answer_token_ids(tokenizer, family: str, vocab_size: int) -> list[int]:
    """The ids of ``family``'s answer tokens (families.ANSWER_TOKENS) in ``tokenizer``; ValueError when one is not a
    single token of the model's vocabulary (a wrong tokenizer would silently score with other logits)."""
    ids = []
    for token in ANSWER_TOKENS[family]:
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == tokenizer.unk_token_id or not 0 <= token_id < vocab_size:
            raise ValueError(f"the tokenizer has no token {token!r} in the model's {vocab_size} ids: not a {family} tokenizer")
        ids.append(int(token_id))
    return ids


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
# The engines that run a causal-LM reranker, by engine name.
CAUSAL_LM_ENGINES = {"torch": TorchCausalLMEngine}


def load_engine(engine: str, model_dir: Path, device: str = "cpu", dtype: str = "auto", num_threads: int = 0,
                **options) -> Engine:
    """Build the named engine for the model's family (families.py); ValueError names what is wrong with the choice.
    ``options``: the engine's keyword options (tuning and benchmarks)."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {sorted(ENGINES)}; got {engine!r}")
    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    family = family_of(json.loads(config_path.read_text())) if config_path.exists() else CROSS_ENCODER
    if family == CROSS_ENCODER:
        return ENGINES[engine](model_dir, device, dtype, num_threads, **options)
    if engine not in CAUSAL_LM_ENGINES:
        raise ValueError(f"{model_dir.name} is a {family} (a causal LM): engine {engine!r} does not run causal LMs; "
                         f"use engine {' or '.join(sorted(CAUSAL_LM_ENGINES))}")
    return CAUSAL_LM_ENGINES[engine](model_dir, device, dtype, num_threads, **options)
