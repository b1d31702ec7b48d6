"""What one huge caller costs everyone else: ``python -m bench.intake`` (about ten minutes on 2 cores).

Small callers (``--clients`` threads, 10 short documents each, a fresh query per call so that no score is cached)
are measured for ``--seconds`` in three phases on a real Triton + gateway serving the tiny offline model at its
whole 8,192-token context:

1. alone;
2. beside one caller repeating a worst-case request (``--documents`` pages of ``--document-chars`` Arabic
   characters) at the default, interactive, priority;
3. beside the same caller at batch priority.

4. the worst-case caller alone (two of its requests): what keeping an instance free costs it.

Each phase reports the small calls' p50 / p99 and count, and the worst-case caller's completed requests and
pairs per second (over the time to its last answer). ``--gateways`` runs the phases against configurations side by
side in the same run: ``defaults`` (what ships: two Triton instances, large requests' chunks on one of them at most,
their micro-batches at a lower CPU priority), ``two-instances-same-priority`` (the same without the lower priority),
``one-instance`` (nothing kept free: a small call may wait for a long forward pass to end) and ``all-at-once`` (no
dispatcher, chunks cut by count only: every chunk of a request sent to Triton at once).

Also, in-process: how long the gateway's tokenizer takes on the worst-case request at max length 512 and 8192.

Writes ``bench/results/intake-<timestamp>.json`` and prints a table. Random-weight offline model: scores mean
nothing; tokenization, truncation, batching and compute are the real model's.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ara_reranker_client import RerankerClient
from ara_reranker_model.store import prepare
from ara_reranker_server.launcher.gateway_process import GatewayProcess
from ara_reranker_server.models import load_tokenizer
from bench import results
from bench.loadgen import ClosedLoop
from bench.markdown import table
from bench.repository import edited_triton
from bench.stats import p50_p99_ms
from bench.systems import NO_CACHE
from tools.arabic_text import QUERIES, SENTENCES, mixed_passages, passage


# name -> (gateway settings, edit of Triton's CPU config or None for the shipped one).
def cpu_config(instances: int, low_priority_batch_tokens: int) -> dict[str, object]:
    """An edit of the CPU config (bench.repository's field paths): ``instances`` model instances, bulk micro-batches at
    a lower CPU priority above ``low_priority_batch_tokens`` padded tokens (0: none)."""
    return {"instance_group.0.count": instances, "parameters.low_priority_batch_tokens": str(low_priority_batch_tokens)}


GATEWAYS = {
    # The shipped defaults: two instances, large requests' chunks on one of them at most (dispatch_window_chunks
    # auto), their micro-batches at a lower CPU priority.
    "defaults": ({}, None),
    "two-instances-same-priority": ({}, cpu_config(2, 0)),  # the same without the lower priority
    "one-instance": ({}, cpu_config(1, 0)),  # one instance: nothing kept free
    # No dispatcher: chunks cut by count only, every chunk of a request sent to Triton at once.
    "all-at-once": ({"dispatch_window_tokens": "0", "dispatch_reserve_tokens": "0", "dispatch_window_chunks": "0",
                     "max_chunk_tokens": str(1 << 40)}, cpu_config(1, 0)),
}


def worst_case_documents(count: int, chars: int) -> list[str]:
    rng = np.random.default_rng(0)
    text = passage(rng, chars // 40 + 10)
    return [text[i % 97 :][:chars] for i in range(count)]


def tokenization(model_dir: Path, documents: list[str], max_length: int) -> dict[str, float]:
    """Seconds the gateway's tokenizer takes to make the request's pairs at ``max_length``."""
    tokenizer = load_tokenizer(str(model_dir), max_length, threads=1)
    started = time.perf_counter()
    tokenizer.encode(QUERIES[0], documents, truncate=True)
    seconds = time.perf_counter() - started
    tokenizer.close()
    return {"max_length": max_length, "seconds": round(seconds, 3)}


def small_calls(target: str, clients: int, seconds: float) -> list[float]:
    """Latencies (ms) of 10-document requests from ``clients`` callers for ``seconds``, a fresh query each call."""
    documents = mixed_passages(np.random.default_rng(1), 10, max_sentences=3)
    calls = ClosedLoop(lambda client, n: client.rerank(f"{QUERIES[n % len(QUERIES)]} {n}", documents), clients,
                       session=lambda: RerankerClient(target, timeout=120), seconds=seconds)
    calls.start().join(timeout_s=seconds + 150)
    outcomes = calls.outcomes
    if failed := [o for o in outcomes if not o.ok]:
        raise failed[0].error
    return [(o.ended - o.started) * 1000 for o in outcomes]


class WorstCaseCaller:
    """Repeats the worst-case request until stopped; counts what completes."""

    def __init__(self, target: str, documents: list[str], priority: str) -> None:
        self.documents = documents
        self.calls = ClosedLoop(lambda client, _: client.rerank(SENTENCES[0], documents, top_k=1, priority=priority), 1,
                                session=lambda: RerankerClient(target, timeout=300, max_message_bytes=64 << 20))
        self.started_at = time.perf_counter()

    def start(self) -> None:
        self.started_at = time.perf_counter()
        self.calls.start()

    def stop(self) -> None:
        self.calls.stop(timeout_s=330)

    def figures(self) -> dict:
        """Requests completed, and pairs per second over the time they took (to the last one's answer)."""
        done = [o.ended for o in self.calls.outcomes if o.ok]
        seconds = (max(done) if done else time.perf_counter()) - self.started_at
        return {"completed": len(done), "errors": self.calls.ended() - len(done), "seconds": round(seconds, 1),
                "pairs_per_s": round(len(done) * len(self.documents) / seconds, 2) if done else 0.0}


def summary(latencies: list[float]) -> dict[str, float]:
    values = np.array(latencies)
    return {"calls": len(values), **p50_p99_ms(values, 1), "max_ms": round(float(values.max()), 1)}


def phases(target: str, documents: list[str], clients: int, seconds: float) -> dict:
    small_calls(target, 1, 2.0)  # warm up
    out = {"alone": summary(small_calls(target, clients, seconds))}
    for priority in ("interactive", "batch"):
        caller = WorstCaseCaller(target, documents, priority)
        caller.start()
        loaded = summary(small_calls(target, clients, seconds))
        caller.stop()
        out[f"beside_worst_case_{priority}"] = loaded | {"worst_case_caller": caller.figures()}
    # The worst-case caller alone: what keeping an instance free costs it when nobody else calls.
    caller = WorstCaseCaller(target, documents, "interactive")
    caller.start()
    try:
        caller.calls.wait_ended(2, 8 * seconds, ok_only=True)
    finally:
        caller.stop()
    out["worst_case_alone"] = {"worst_case_caller": caller.figures()}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = results.parser(__doc__)
    parser.add_argument("--documents", type=int, default=120)
    parser.add_argument("--document-chars", type=int, default=14000)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0)
    results.add_names(parser, "--gateways", list(GATEWAYS), "gateway configurations")
    args = parser.parse_args(argv)
    model_dir = prepare("tiny")
    documents = worst_case_documents(args.documents, args.document_chars)
    size_mb = sum(len(d.encode()) for d in documents) / 1e6
    print(f"worst-case request: {len(documents)} documents x {args.document_chars} characters ({size_mb:.1f} MB)")
    result: dict = {"model": "tiny", "request_mb": round(size_mb, 1), "documents": len(documents),
                    "document_chars": args.document_chars, "clients": args.clients, "seconds": args.seconds,
                    "tokenization": [tokenization(model_dir, documents, n) for n in (512, 8192)], "gateways": {}}
    for name in args.gateways:
        gateway_settings, edit = GATEWAYS[name]
        with edited_triton(model_dir, *([edit] if edit else [])) as triton:
            settings = {"triton_endpoints": triton.grpc_url, "tokenizer": str(model_dir),
                        "max_message_bytes": str(64 << 20), **NO_CACHE, **gateway_settings}
            with GatewayProcess(settings) as gateway:
                result["gateways"][name] = phases(gateway.target, documents, args.clients, args.seconds)
    results.finish("intake", "bench.intake", argv, args, result, markdown)
    return 0


def markdown(result: dict) -> str:
    rows = []
    for name, figures in result["gateways"].items():
        alone = figures["alone"]["p99_ms"]
        for phase, f in figures.items():
            caller = f.get("worst_case_caller", {})
            rows.append((name, phase.replace("_", " "), f.get("p50_ms", ""), f.get("p99_ms", ""), f.get("calls", ""),
                         f"{f['p99_ms'] / alone:.1f}x" if "p99_ms" in f else "", caller.get("completed", ""),
                         caller.get("pairs_per_s", "")))
    return "\n".join(table(["gateway", "phase", "small p50 ms", "small p99 ms", "small calls", "p99 / alone",
                            "worst-case requests done", "its pairs/s"], rows, "llrrrrrr"))


if __name__ == "__main__":
    raise SystemExit(main())
