"""Infinity (``infinity-emb==0.0.78``) serving the same model directory on CPU through its /rerank.

It lives in its own virtualenv, ``bench/.venv-infinity`` (``make bench-infinity``): it pins
transformers 4.x and sentence-transformers 3.x, which this project's environment does not have.
Its two engines:

- ``torch``: ``--engine torch --device cpu`` on the model directory as it is;
- ``optimum`` (ONNX Runtime): the model exported once with ``optimum-cli export onnx --task
  text-classification`` into ``bench/.cache/infinity/<model>/onnx``, ``max_position_embeddings`` set in
  the exported copy's config to the tokens a pair may have (Infinity truncates pairs to that value; XLM-R's
  positions hold two fewer tokens than their count), so that it reads as much of a pair as the service does
  (``optimum_max_tokens``; runs before 2026-11-29 21:00 capped it at 512), then started from inside the
  exported folder with ``--model-id .``.
  On first start Infinity optimizes the graph (optimum ``ORTOptimizer``, ``OptimizationConfig(
  optimization_level=99, optimize_with_onnxruntime_only=False, optimize_for_gpu=False, fp16=False)``)
  and caches it; with optimum 2.x (the only one that imports with torch 2.13) that call fails on the
  removed ``optimize_with_onnxruntime_only`` argument and Infinity silently serves the unoptimized graph.
  So that Infinity is measured at its best, ``export_for_optimum`` runs the same optimization, less
  that argument, and saves it where Infinity looks for its cached graph, which it then loads as its own.

Each server is bound to 127.0.0.1 on a free port, in its own process group, and stopped by PID.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path

from ara_reranker_server.launcher.child_process import ChildProcess
from ara_reranker_server.launcher.triton_launcher import free_port

__all__ = ["INFINITY_VENV", "DEFAULT_BATCH_SIZE", "InfinitySystem", "available", "export_for_optimum"]

BENCH_DIR = Path(__file__).resolve().parent
INFINITY_VENV = BENCH_DIR / ".venv-infinity"
CACHE_DIR = BENCH_DIR / ".cache" / "infinity"
ENGINES = ("torch", "optimum")
DEFAULT_BATCH_SIZE = 32  # Infinity's own --batch-size default: pairs per forward pass (it has no token budget)
# What the optimum engine read of a pair in results that do not record it (runs before it was the model's).
OPTIMUM_MAX_TOKENS_BEFORE = 512


def optimum_max_tokens(model_dir: Path) -> int:
    """Tokens of a pair Infinity's optimum engine reads: the model's, as the service (its tokenizer's
    model_max_length, within the positions XLM-R can use)."""
    config = json.loads((model_dir / "config.json").read_text())
    tokenizer = json.loads((model_dir / "tokenizer_config.json").read_text())
    return min(int(tokenizer.get("model_max_length", 512)), int(config["max_position_embeddings"]) - 2)


def available() -> bool:
    """Whether ``make bench-infinity`` has built the virtualenv."""
    return (INFINITY_VENV / "bin" / "infinity_emb").exists()


def export_for_optimum(model_dir: Path) -> Path:
    """The optimum-cli ONNX export of ``model_dir`` that Infinity's optimum engine loads (made once)."""
    target = CACHE_DIR / model_dir.name / "onnx"
    done = target / ".exported"
    max_tokens = optimum_max_tokens(model_dir)
    stamp = _source_stamp(model_dir) + f" max_tokens={max_tokens}"
    if done.exists() and done.read_text() == stamp:
        return target
    target.mkdir(parents=True, exist_ok=True)
    command = [str(INFINITY_VENV / "bin" / "optimum-cli"), "export", "onnx", "--task", "text-classification",
               "--model", str(model_dir), str(target)]
    result = subprocess.run(command, capture_output=True, text=True, env=_env(target.parent))
    if result.returncode != 0:
        raise RuntimeError(f"optimum-cli export failed ({result.returncode}):\n{result.stderr[-3000:]}")
    config_path = target / "config.json"
    config = json.loads(config_path.read_text())
    config["max_position_embeddings"] = max_tokens
    config_path.write_text(json.dumps(config, indent=2))
    _optimize_like_infinity(target)
    done.write_text(stamp)
    return target


# Infinity's own optimization (infinity_emb/transformer/utils_optimum.py, optimize_model), run in its venv.
_OPTIMIZE = """
import sys
from pathlib import Path
from huggingface_hub.constants import HUGGINGFACE_HUB_CACHE
from optimum.onnxruntime import ORTModelForSequenceClassification, ORTOptimizer
from optimum.onnxruntime.configuration import OptimizationConfig
provider = "CPUExecutionProvider"
save_dir = Path(HUGGINGFACE_HUB_CACHE) / "infinity_onnx" / provider / "."   # Infinity's path for --model-id .
model = ORTModelForSequenceClassification.from_pretrained(".", provider=provider, file_name="model.onnx")
config = OptimizationConfig(optimization_level=99, optimize_for_gpu=False, fp16=False)
print(ORTOptimizer.from_pretrained(model).optimize(optimization_config=config, save_dir=save_dir.as_posix(), one_external_file=True))
"""


def _optimize_like_infinity(export_dir: Path) -> None:
    result = subprocess.run([str(INFINITY_VENV / "bin" / "python"), "-c", _OPTIMIZE], cwd=export_dir, capture_output=True,
                            text=True, env=_env(export_dir.parent))
    if result.returncode != 0:
        raise RuntimeError(f"optimizing the ONNX graph as Infinity does failed:\n{result.stderr[-3000:]}")


def _source_stamp(model_dir: Path) -> str:
    weights = sorted(model_dir.glob("*.safetensors"))
    return json.dumps([[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in weights])


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "HF_HOME": str(home / "hf"),  # its optimized-graph cache, one per model
        "HF_HUB_OFFLINE": "1",
        "DO_NOT_TRACK": "1",
        "INFINITY_ANONYMOUS_USAGE_STATS": "0",
        "PYTHONPATH": "",
    })
    env.pop("VIRTUAL_ENV", None)
    return env


class InfinitySystem:
    """One Infinity server process (``engine`` torch or optimum) and an HTTP client for its /rerank."""

    def __init__(self, model_dir: Path, engine: str, *, batch_size: int = DEFAULT_BATCH_SIZE, log_dir: Path | None = None,
                 startup_timeout_s: float = 900.0) -> None:
        if engine not in ENGINES:
            raise ValueError(f"infinity engine must be one of {ENGINES}; got {engine!r}")
        self.name = f"infinity-{engine}"
        self.model_dir, self.engine, self.batch_size = Path(model_dir).resolve(), engine, batch_size
        self.log_path = (log_dir or CACHE_DIR) / f"{self.name}.log"
        self.startup_timeout_s = startup_timeout_s
        self.port = free_port()
        self._child = ChildProcess("infinity", self.log_path, own_group=True)
        self.model_name = ""
        self._local = threading.local()
        # Tokens of a pair it reads (recorded with its results): the optimum export's cap, else the model's own.
        self.max_tokens = optimum_max_tokens(self.model_dir)

    def __enter__(self) -> "InfinitySystem":
        if not available():
            raise RuntimeError(f"{INFINITY_VENV} is missing: run `make bench-infinity` first")
        if self.engine == "optimum":
            cwd, model_id = export_for_optimum(self.model_dir), "."
        else:
            cwd, model_id = self.model_dir, str(self.model_dir)
        command = [str(INFINITY_VENV / "bin" / "infinity_emb"), "v2", "--model-id", model_id, "--engine", self.engine,
                   "--device", "cpu", "--batch-size", str(self.batch_size), "--host", "127.0.0.1", "--port", str(self.port)]
        self._child.start(command, cwd=cwd, env=_env(CACHE_DIR / self.model_dir.name))
        try:
            self._child.wait_ready(self._serves_model, self.startup_timeout_s, poll_s=0.5)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _serves_model(self) -> bool:
        """Whether /models answers with the model (its name is kept for /rerank)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/models", timeout=2) as response:
                self.model_name = json.loads(response.read())["data"][0]["id"]
                return True
        except (urllib.error.URLError, OSError, KeyError, IndexError, ValueError):
            return False

    def __exit__(self, *exc) -> None:
        self._child.stop(20)

    def pids(self) -> list[int]:
        return [self._child.pid] if self._child.running else []

    def rerank(self, query: str, documents: list[str]) -> list[float]:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        body = json.dumps({"model": self.model_name, "query": query, "documents": documents, "return_documents": False})
        try:
            conn.request("POST", "/rerank", body=body.encode(), headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            payload = response.read()
        except (http.client.HTTPException, OSError):
            self._local.conn = None
            conn.close()
            raise
        if response.status != 200:
            raise RuntimeError(f"infinity /rerank answered {response.status}: {payload[:300]!r}")
        results = json.loads(payload)["results"]
        scores = [0.0] * len(documents)
        for r in results:
            scores[r["index"]] = r["relevance_score"]
        return scores

    def counters(self) -> dict[str, float]:
        return {}
