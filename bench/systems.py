"""The systems under test, each a context manager with one thread-safe call: ``rerank(query, documents)``.

- ``InProcessLimit``: the model in this process, no transport at all, with the best batching known here:
  every request waiting is taken at once and scored in one pass by the Triton model's own scorer
  (ara_reranker_model.scoring: all pairs sorted by length, cut into micro-batches by its partition, padded by its
  rule), on any of its engines (ara_reranker_model.engines: torch or onnx, any dtype, CPU or GPU). Its ``logits``
  also serve as an evaluation ranker (bench/precision.py).
- ``SentenceTransformersCE``: ``CrossEncoder.predict(pairs, batch_size=32)``, the model card's usage, one
  call per request, first come first served by one worker thread (concurrent calls on the same cores
  only slow each other down), as a simple server wrapping it would do.
- ``PlainTransformers``: the pairs tokenized with padding and scored in one forward pass by transformers directly
  (what ``CrossEncoder.predict`` does for a request of up to 32 documents), in a child process of its own whose torch
  keeps its default threads; each call timed inside that process (no hop counted): the reference for the overhead.
- ``ServiceSystem``: this project's gateway + tritonserver, called through the generated client.
- ``InfinitySystem`` (bench/infinity.py): infinity-emb's /rerank over HTTP.

Every system says which processes serve it (``pids``), for the peak-RSS sampler.
"""

from __future__ import annotations

import json
import os
import queue
import tempfile
import threading
from concurrent.futures import Future
from pathlib import Path

import numpy as np

from ara_reranker_model.families import QWEN3_RERANKER, family_of
from ara_reranker_model.limits import max_input_length
from ara_reranker_model.scoring import Batching, CrossEncoderScorer, RequestRows, scatter
from ara_reranker_server.ranking import sigmoid
from bench import prometheus
from client.evaluation.recipes import Qwen3RerankerRecipe

# Benchmarks measure the model, not the score cache: their workloads repeat requests, which the cache would
# answer without the model (bench/cache.py measures the cache itself).
NO_CACHE = {"score_cache_mb": "0"}

__all__ = ["InProcessLimit", "PlainTransformers", "SentenceTransformersCE", "ServiceSystem", "triton_metrics"]


class InProcessLimit:
    """The in-process limit: one batching thread takes every pending request at once (zero queue delay)."""

    def __init__(self, model_dir: Path, engine: str, *, threads: int = 1, workers: int = 0, max_batch_tokens: int = 8192,
                 overhead_tokens: int = 0, dtype: str = "auto", device: str = "cpu", engine_options: dict | None = None) -> None:
        """``workers`` threads run micro-batches side by side, each engine call on ``threads`` threads
        (0 workers: one per core), as model.py does with forward_workers and num_threads. ``engine_options``:
        the engine's keyword options (ara_reranker_model.engines.load_engine)."""
        from transformers import AutoTokenizer

        self.name = f"limit-{engine}" + ("" if dtype == "auto" else f"-{dtype}")
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.max_length = max_input_length(model_dir)
        # A causal-LM reranker is fed its recipe's whole prompts (the default instruction), as the gateway sends them.
        self.prompts = (Qwen3RerankerRecipe(model_dir, self.max_length, load_model=False)
                        if family_of(json.loads((Path(model_dir) / "config.json").read_text())) == QWEN3_RERANKER else None)
        self.scorer = CrossEncoderScorer.load(model_dir, Batching(max_batch_tokens, overhead_tokens, workers), engine=engine,
                                              device=device, dtype=dtype, num_threads=threads, **(engine_options or {}))
        self.stats = {"real_tokens": 0, "padded_tokens": 0, "forwards": 0, "rows": 0}
        self._queue: queue.Queue = queue.Queue()
        self._worker = threading.Thread(target=self._serve, daemon=True, name="batcher")

    def __enter__(self) -> "InProcessLimit":
        self._worker.start()
        return self

    def __exit__(self, *exc) -> None:
        self._queue.put(None)
        self._worker.join(30)
        self.scorer.close()

    def pids(self) -> list[int]:
        return [os.getpid()]

    def rerank(self, query: str, documents: list[str]) -> np.ndarray:
        future: Future = Future()
        self._queue.put((query, documents, future))
        return future.result()

    def rerank_direct(self, query: str, documents: list[str]) -> np.ndarray:
        """Tokenize and forward in the caller's thread (one request alone: no queue hop)."""
        return self._score([(query, documents)])[0]

    def logits(self, query: str, documents: list[str]) -> list[float]:
        """The model's logit for each document, in the caller's thread: an evaluation ``Ranker``."""
        return self._logits([(query, documents)])[0].tolist()

    def close(self) -> None:
        """Release the forward threads of an instance used without ``with`` (``logits`` only)."""
        self.scorer.close()

    def _serve(self) -> None:
        while (first := self._queue.get()) is not None:
            batch = [first]
            while True:  # everything already waiting joins this round
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                batch.append(item)
            try:
                scores = self._score([(q, d) for q, d, _ in batch])
            except Exception as exc:
                for *_, future in batch:
                    future.set_exception(exc)
                continue
            for (*_, future), s in zip(batch, scores):
                future.set_result(s)

    def _score(self, jobs: list[tuple[str, list[str]]]) -> list[np.ndarray]:
        return [sigmoid(logits) for logits in self._logits(jobs)]

    def _logits(self, jobs: list[tuple[str, list[str]]]) -> list[np.ndarray]:
        """Float32 logits of every (query, documents) job, all pairs scored in one pass as model.py scores them."""
        reads_types = self.scorer.takes_token_types  # BERT-style models read them (the document is type 1)
        requests = {}
        for k, (query, documents) in enumerate(jobs):
            if self.prompts is not None:
                requests[k] = RequestRows([self.prompts.encode(query, d) for d in documents])
                continue
            encoded = self.tokenizer([query] * len(documents), documents, truncation="only_second",
                                     max_length=self.max_length, return_attention_mask=False,
                                     return_token_type_ids=reads_types)
            requests[k] = RequestRows(encoded["input_ids"], encoded["token_type_ids"] if reads_types else None)
        batches = self.scorer.score(requests)
        logits = scatter(batches, [len(documents) for _, documents in jobs])
        self.stats["forwards"] += len(batches)
        self.stats["padded_tokens"] += sum(batch.padded_tokens for batch in batches)
        self.stats["real_tokens"] += sum(batch.real_tokens for batch in batches)
        self.stats["rows"] += sum(len(request) for request in requests.values())
        return logits

    def counters(self) -> dict[str, float]:
        return dict(self.stats)


class SentenceTransformersCE:
    """sentence-transformers ``CrossEncoder(model_dir, max_length).predict(pairs, batch_size=32)``, one
    request at a time in arrival order."""

    def __init__(self, model_dir: Path, *, batch_size: int = 32, max_length: int = 512) -> None:
        from sentence_transformers import CrossEncoder

        self.name = "sentence-transformers"
        self.model = CrossEncoder(str(model_dir), max_length=max_length, device="cpu")
        self.batch_size = batch_size
        self._queue: queue.Queue = queue.Queue()
        self._worker = threading.Thread(target=self._serve, daemon=True, name="predict")

    def __enter__(self) -> "SentenceTransformersCE":
        self._worker.start()
        return self

    def __exit__(self, *exc) -> None:
        self._queue.put(None)
        self._worker.join(30)

    def pids(self) -> list[int]:
        return [os.getpid()]

    def rerank(self, query: str, documents: list[str]) -> np.ndarray:
        future: Future = Future()
        self._queue.put(([(query, d) for d in documents], future))
        return future.result()

    def _serve(self) -> None:
        while (item := self._queue.get()) is not None:
            pairs, future = item
            try:
                future.set_result(self.model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False))
            except Exception as exc:
                future.set_exception(exc)

    def counters(self) -> dict[str, float]:
        return {}


class PlainTransformers:
    """transformers alone: ``tokenizer(queries, documents, padding=True, truncation="only_second")`` then one forward
    pass of ``AutoModelForSequenceClassification`` in inference mode, float32 on CPU, torch's default threads. It
    runs in a child process (the in-process limit sets torch to one thread per pass, process-wide); ``logits``
    returns the logits and the seconds the call took in that process, so no inter-process hop is counted."""

    def __init__(self, model_dir: Path) -> None:
        self.name = "transformers"
        self.model_dir = Path(model_dir)
        self._conn = self._process = None

    def __enter__(self) -> "PlainTransformers":
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_plain_transformers, args=(child, str(self.model_dir)), daemon=True)
        self._process.start()
        child.close()
        if not self._conn.poll(300):
            raise TimeoutError("transformers did not load the model within 300 s")
        self._conn.recv()  # loaded and warmed up
        return self

    def __exit__(self, *exc) -> None:
        if self._process is not None:
            self._conn.send(None)
            self._process.join(30)
            if self._process.is_alive():
                self._process.kill()

    def pids(self) -> list[int]:
        return [self._process.pid] if self._process is not None else []

    def logits(self, query: str, documents: list[str]) -> tuple[np.ndarray, float]:
        """The pairs' logits and the seconds transformers took for them (tokenization and the forward pass)."""
        self._conn.send((query, documents))
        outcome = self._conn.recv()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def _plain_transformers(conn, model_dir: str) -> None:
    """The child process of ``PlainTransformers``: answers (query, documents) with (logits, seconds) until None."""
    import time

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()

    def score(query: str, documents: list[str]) -> np.ndarray:
        with torch.inference_mode():
            batch = tokenizer([query] * len(documents), documents, padding=True, truncation="only_second",
                              max_length=tokenizer.model_max_length, return_tensors="pt")
            return model(**batch).logits[:, 0].float().numpy()

    score("warm", ["up"] * 4)
    conn.send("ready")
    while (item := conn.recv()) is not None:
        try:
            started = time.perf_counter()
            logits = score(*item)
            conn.send((logits, time.perf_counter() - started))
        except Exception as exc:
            conn.send(exc)


class ServiceSystem:
    """tritonserver (model.py, the chosen engine) + the gateway, called through ``client.RerankerClient``."""

    def __init__(self, model_dir: Path, engine: str, *, gateway_args: dict[str, str] | None = None,
                 log_dir: Path | None = None, extra_env: dict[str, str] | None = None, config_name: str | None = None,
                 otel_env: dict[str, str] | None = None, triton_edits: dict[str, object] | None = None) -> None:
        """``otel_env``: OpenTelemetry variables (OTEL_EXPORTER_OTLP_ENDPOINT, ...) that trace both processes, as
        ``make run`` does with them; None: no tracing. ``triton_edits``: fields of the CPU config changed (paths of
        ``bench.repository``, e.g. ``{"instance_group.0.count": 1}``), served from a copy of the model repository."""
        self.name = f"service-{engine}"
        self.otel_env = dict(otel_env or {})
        self.model_dir, self.engine = Path(model_dir), engine
        self.gateway_args = dict(gateway_args or {})
        self.log_dir = log_dir
        self.extra_env = dict(extra_env or {})
        self.config_name = config_name  # None: the launcher's choice (configs/cpu.pbtxt without a GPU)
        self.triton_edits = dict(triton_edits or {})
        self.triton = self.gateway = self.client = self._repository = None

    def __enter__(self) -> "ServiceSystem":
        from ara_reranker_client import RerankerClient
        from ara_reranker_server.launcher.gateway_process import GatewayProcess
        from ara_reranker_server.launcher.triton_launcher import TritonOptions, TritonServer, trace_config

        log = (lambda name: self.log_dir / name) if self.log_dir else (lambda name: None)
        try:
            repository = {}
            if self.triton_edits:
                from bench.repository import edited_copy

                self._repository = tempfile.TemporaryDirectory(prefix="service-repository-")
                repository["model_repository"] = edited_copy(Path(self._repository.name), self.triton_edits)
            self.triton = TritonServer(TritonOptions(model_dir=self.model_dir, engine=self.engine, **repository,
                                                     log_path=log("tritonserver.log"), extra_env=self.extra_env,
                                                     config_name=self.config_name, trace_config=trace_config(self.otel_env)))
            self.triton.start()
            args = {"triton_endpoints": self.triton.grpc_url, "tokenizer": str(self.model_dir), **NO_CACHE, **self.gateway_args}
            self.gateway = GatewayProcess(args, log_path=log("gateway.log"),
                                          env=dict(os.environ, **self.otel_env) if self.otel_env else None)
            self.gateway.start()
            self.client = RerankerClient(self.gateway.target, timeout=600.0)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.client is not None:
            self.client.close()
        if self.gateway is not None:
            self.gateway.stop()
        if self.triton is not None:
            self.triton.stop()
        if self._repository is not None:
            self._repository.cleanup()

    def pids(self) -> list[int]:
        procs = [p for p in (self.triton and self.triton.process, self.gateway and self.gateway.process) if p]
        return [p.pid for p in procs]

    def rerank(self, query: str, documents: list[str]) -> list:
        return self.client.rerank(query, documents)

    def model_instances(self) -> int:
        """Model instances Triton runs: its Python-backend stub processes (one per instance)."""
        import psutil

        stubs = 0
        for child in psutil.Process(self.triton.process.pid).children(recursive=True):
            try:
                stubs += bool(child.cmdline()) and child.cmdline()[0].endswith("triton_python_backend_stub")
            except psutil.Error:
                pass
        return stubs

    def counters(self) -> dict[str, float]:
        """Triton's and model.py's counters (deltas between two calls give a level's figures)."""
        return triton_metrics(self.triton.metrics_url)


_METRICS = {
    "inference_count": "nv_inference_count",  # rows (pairs) inferred
    "exec_count": "nv_inference_exec_count",  # execute() calls
    "request_success": "nv_inference_request_success",  # Triton requests (gateway chunks)
    "queue_us": "nv_inference_queue_duration_us",
    "real_tokens": "ara_reranker_real_tokens_total",
    "padded_tokens": "ara_reranker_padded_tokens_total",
    "forwards": "ara_reranker_forward_rows_count",
    "rows": "ara_reranker_forward_rows_sum",
}


def triton_metrics(url: str, names: dict[str, str] | None = None) -> dict[str, float]:
    """Sum of each metric of ``names`` (key -> metric name; default: Triton's counters of interest) over its
    label sets, read from a Prometheus endpoint (Triton's, or the gateway's)."""
    page = prometheus.scrape(url, timeout_s=10)
    return {key: page.value(name) for key, name in (names or _METRICS).items()}
