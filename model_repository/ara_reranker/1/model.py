"""ARA-Reranker-V1 (or any HF sequence-classification cross-encoder, or an LLM reranker: Qwen3-Reranker,
bge-reranker-v2-gemma) as a Triton Python-backend model.

Inputs are tokens, not text: INT64 ``input_ids`` and ``attention_mask`` of shape [rows, length] per
request (ragged across requests), right-padded, and ``token_type_ids`` of the same shape: optional,
required by models that read token types (BERT-style, ``type_vocab_size > 1``: ms-marco MiniLM), ignored
by the others (XLM-R). Output: FP32 ``logits`` [rows, 1]; for an LLM reranker each row is its whole prompt and
its logit is the answer tokens' at the row's last position (ara_reranker_model.families, engines).

The scoring is ara_reranker_model's ``CrossEncoderScorer``: ``execute`` hands it every request the dynamic
batcher hands over, in one pass (validate each request, strip padding, sort all rows of all requests by length,
token-budgeted micro-batches, one forward pass each, several threads at once on CPU, logits scattered back).
This module adapts it to Triton: the config read once in ``initialize``, tensors in and out, one response per
request (an error of its own for a bad one: the others in the batch are still answered), and the metrics.
"""

from __future__ import annotations

import json
import os
import queue
import site
import sys
import threading
from pathlib import Path

# The Python backend stub embeds an isolated interpreter that ignores PYTHONPATH. Honour it here, ahead
# of the system's site-packages, so that the virtualenv the launcher names supplies torch and numpy.
for _path in reversed([p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]):
    if _path not in sys.path:
        sys.path.insert(0, _path)
        site.addsitedir(_path)  # also runs the directory's .pth files

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

# The scorer and the model facts shared with the gateway (numpy and the standard library at import; torch when the
# engine loads): installed beside torch in the Triton image, or in the virtualenv the launcher names.
from ara_reranker_model.config import limits, parameters  # noqa: E402
from ara_reranker_model.layout import MODEL_DIR_ENV  # noqa: E402
from ara_reranker_model.limits import coupled_limit_problems  # noqa: E402
from ara_reranker_model.scoring import CrossEncoderScorer, MicroBatch, RequestError  # noqa: E402


def resolve_model_dir(args: dict, params: dict[str, str]) -> Path:
    """The weights' directory: env ARA_RERANKER_MODEL_DIR, else the ``model_dir`` parameter, relative
    paths taken from the directory that holds the model repository (the project root in a checkout)."""
    model_dir = Path(os.environ.get(MODEL_DIR_ENV) or params.get("model_dir", ""))
    if model_dir.is_absolute():
        return model_dir
    # args["model_repository"] is this model's own directory (<repository>/ara_reranker).
    return (Path(args["model_repository"]).resolve().parent.parent / model_dir).resolve()


class TritonPythonModel:
    """Cross-encoder scoring with length-sorted, token-budgeted micro-batches."""

    def initialize(self, args: dict) -> None:
        model_config = json.loads(args["model_config"])
        params = parameters(model_config)
        model_dir = resolve_model_dir(args, params)
        if not (model_dir / "config.json").exists():
            raise pb_utils.TritonModelException(
                f"model_dir {model_dir} has no config.json: run `make model` or set {MODEL_DIR_ENV}"
            )
        on_gpu = args["model_instance_kind"] == "GPU"
        device = f"cuda:{args['model_instance_device_id']}" if on_gpu else "cpu"
        try:
            triton = limits(model_config)
            self.scorer = CrossEncoderScorer.from_parameters(model_dir, triton.max_batch_tokens, params, device)
        except ValueError as exc:
            raise pb_utils.TritonModelException(str(exc)) from exc
        # The limits that must agree with others (model_limits.COUPLED_LIMITS), those known here.
        problems = coupled_limit_problems({"max_batch_size": triton.max_batch_size, "max_queue_size": triton.max_queue_size,
                                           "max_batch_tokens": triton.max_batch_tokens,
                                           "max_input_length": self.scorer.max_length})
        if problems:
            raise pb_utils.TritonModelException("; ".join(problems))
        rule = getattr(self.scorer.engine, "scoring_rule", None)  # an LLM reranker's answer tokens, found at load
        if rule:
            pb_utils.Logger.log_info(f"ara_reranker: {rule}")
        self.metrics = _ModelMetrics(args["model_name"])
        self.scorer.warm_up()  # Triton reports READY only once the model has really run

    def execute(self, requests: list) -> list | None:
        """Answers each request as soon as all its rows are scored, through its response sender, so that a small
        request batched with a large one does not wait for the large one's other micro-batches. A request alone is
        answered by returning its response: one hand-off back to Triton instead of two (the response, then the end
        of execute()), which is what the next request waits for."""
        answers = _Answers(requests, early=len(requests) > 1)
        valid = {}  # request index -> its rows, padding stripped
        for r, request in enumerate(requests):
            if request.is_cancelled():  # the caller gave up while it queued: compute nothing for it
                answers.fail(r, pb_utils.TritonError("request cancelled by the caller", pb_utils.TritonError.CANCELLED))
                continue
            try:
                valid[r] = self.scorer.request_rows(*(_array(request, name) for name in _INPUTS))
            except RequestError as exc:
                answers.fail(r, pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG))
                continue
            answers.expect(r, len(valid[r]))
        batches = self.scorer.score(valid, answers.scored)
        if batches:
            # (rows, real tokens, padded tokens, seconds) of each pass that ran
            passes = [(len(b.owners), b.real_tokens, b.padded_tokens, b.seconds) for b in batches if b.error is None]
            self.metrics.observe(sum(len(b.owners) for b in batches), passes)
        return answers.finish()

    def finalize(self) -> None:
        self.metrics.close()
        self.scorer.close()


_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _array(request, name: str) -> np.ndarray | None:
    """The request's input ``name`` as numpy, None when it is absent."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


class _Answers:
    """One execute() call's requests, each answered exactly once: an error at once, or its logits as soon as the last
    of its rows is scored (micro-batches finish on several threads), through its response sender (``early``); else
    all returned together by execute() (``finish``)."""

    def __init__(self, requests: list, early: bool) -> None:
        self._requests = requests
        self._early = early
        self._responses: list = [None] * len(requests)  # without ``early``: what execute() returns
        self._outputs: dict[int, np.ndarray] = {}
        self._left: dict[int, int] = {}  # rows still to score, per request
        self._errors: dict[int, pb_utils.TritonError] = {}
        self._lock = threading.Lock()

    def expect(self, r: int, rows: int) -> None:
        self._outputs[r] = np.empty((rows, 1), dtype=np.float32)
        self._left[r] = rows

    def fail(self, r: int, error) -> None:
        self._send(r, pb_utils.InferenceResponse(error=error))

    def scored(self, batch: MicroBatch) -> None:
        """The rows (request, row) of one micro-batch, with their logits, or the error that micro-batch met."""
        error = None if batch.error is None else pb_utils.TritonError(f"forward pass failed: {batch.error}")
        finished = []
        with self._lock:
            for j, (r, i) in enumerate(batch.owners):
                if error is not None:
                    self._errors.setdefault(r, error)
                else:
                    self._outputs[r][i, 0] = batch.logits[j]
                self._left[r] -= 1
                if self._left[r] == 0:
                    finished.append(r)
        for r in finished:
            self._send(r, pb_utils.InferenceResponse(error=self._errors[r]) if r in self._errors
                       else pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("logits", self._outputs[r])]))

    def finish(self) -> list | None:
        """What execute() returns: every response (None when they went through the response senders). Requests left
        unanswered (none, unless a row was never scored) get an error, never silence."""
        for r, left in self._left.items():
            if left:
                self._send(r, pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{left} rows were not scored")))
        return None if self._early else self._responses

    def _send(self, r: int, response) -> None:
        if self._early:
            self._requests[r].get_response_sender().send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        else:
            self._responses[r] = response


class _ModelMetrics:
    """Per-execute and per-forward metrics exported on Triton's metrics port.

    Every update of a Triton metric from the stub is a round trip to the Triton process (~0.1 ms; an
    execute() of a few passes made ten of them, ~1 ms of a small request's latency). So execute() only
    queues its observations and returns; a reporter thread hands them to Triton at most every
    ``REPORT_INTERVAL_S``, counters summed over whatever has queued (reported after every execute(), the round
    trips took a tenth of the stub's CPU under one-at-a-time small requests, bench.profile). A scrape may miss
    the last fraction of a second of work, never any of it."""

    REPORT_INTERVAL_S = 0.25

    SIZE_BUCKETS = [2.0**k for k in range(0, 15)]
    TOKEN_BUCKETS = [2.0**k for k in range(4, 20)]
    DURATION_BUCKETS = [0.0005 * 1.5**k for k in range(0, 25)]

    def __init__(self, model_name: str) -> None:
        self._labels = {"model": model_name}
        self._families = []  # a Metric is only valid while its MetricFamily lives
        histogram, counter, gauge = pb_utils.MetricFamily.HISTOGRAM, pb_utils.MetricFamily.COUNTER, pb_utils.MetricFamily.GAUGE
        self.rows = self._metric("ara_reranker_execute_rows", "Rows (query-document pairs) per execute() call", histogram, self.SIZE_BUCKETS)
        self.batch_rows = self._metric("ara_reranker_forward_rows", "Rows per forward pass (micro-batch)", histogram, self.SIZE_BUCKETS)
        self.batch_tokens = self._metric("ara_reranker_forward_tokens", "Padded tokens computed per forward pass", histogram, self.TOKEN_BUCKETS)
        self.duration = self._metric("ara_reranker_forward_duration_seconds", "Duration of one forward pass", histogram, self.DURATION_BUCKETS)
        self.real = self._metric("ara_reranker_real_tokens_total", "Real (non-padding) tokens computed", counter)
        self.padded = self._metric("ara_reranker_padded_tokens_total", "Tokens computed including padding", counter)
        self.padding_ratio = self._metric("ara_reranker_padding_ratio", "Real / padded tokens of the last execute() call", gauge)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closing = threading.Event()
        self._reporter = threading.Thread(target=self._report, name="metrics", daemon=True)
        self._reporter.start()

    def _metric(self, name: str, description: str, kind, buckets: list[float] | None = None):
        family = pb_utils.MetricFamily(name=name, description=description, kind=kind)
        self._families.append(family)
        if buckets is None:
            return family.Metric(labels=self._labels)
        return family.Metric(labels=self._labels, buckets=buckets)

    def observe(self, rows: int, passes: list[tuple[int, int, int, float]]) -> None:
        """One execute() call: its rows, and (rows, real tokens, padded tokens, seconds) of each forward pass."""
        self._queue.put((rows, passes))

    def close(self) -> None:
        """Report what is queued, then stop the reporter."""
        self._closing.set()
        self._queue.put(None)
        self._reporter.join(timeout=10)

    def _report(self) -> None:
        while (item := self._queue.get()) is not None:
            self._closing.wait(self.REPORT_INTERVAL_S)  # let more queue up: one round of updates for all of them
            executes = [item]
            while not self._queue.empty():  # everything queued meanwhile goes in this round
                item = self._queue.get()
                if item is None:
                    self._queue.put(None)
                    break
                executes.append(item)
            try:
                self._send(executes)
            except Exception as exc:  # metrics must never take the model down
                pb_utils.Logger.log_warn(f"ara_reranker: could not report metrics: {exc}")

    def _send(self, executes: list[tuple[int, list[tuple[int, int, int, float]]]]) -> None:
        real_tokens = padded_tokens = 0
        for rows, passes in executes:
            self.rows.observe(rows)
            for pass_rows, real, padded, seconds in passes:
                self.batch_rows.observe(pass_rows)
                self.batch_tokens.observe(padded)
                self.duration.observe(seconds)
                real_tokens += real
                padded_tokens += padded
        last = executes[-1][1]
        if last:
            self.padding_ratio.set(sum(p[1] for p in last) / sum(p[2] for p in last))
        # The token counters go last: once they count an execute() call, all its other figures are in.
        self.real.increment(real_tokens)
        self.padded.increment(padded_tokens)
