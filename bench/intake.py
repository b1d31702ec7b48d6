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

import argparse
import itertools
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ara_reranker_client import RerankerClient, RerankerError
from ara_reranker_model.store import prepare
from ara_reranker_server.launcher.gateway_process import GatewayProcess
from ara_reranker_server.models import load_tokenizer
from bench.run import machine_info, write_result
from bench.systems import NO_CACHE, edited_triton
from tools.arabic_text import QUERIES, SENTENCES, mixed_passages, passage


# name -> (gateway settings, edit of Triton's CPU config or None for the shipped one).
def cpu_config(instances: int, low_priority_batch_tokens: int) -> Callable[[Any], None]:
    """An edit of the CPU config: ``instances`` model instances, bulk micro-batches at a lower CPU priority above
    ``low_priority_batch_tokens`` padded tokens (0: none)."""
    def edit(config) -> None:
        config.instance_group[0].count = instances
        config.parameters["low_priority_batch_tokens"].string_value = str(low_priority_batch_tokens)

    return edit


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
    latencies: list[float] = []
    lock = threading.Lock()
    documents = mixed_passages(np.random.default_rng(1), 10, max_sentences=3)
    counter = itertools.count()

    def run() -> None:
        deadline = time.monotonic() + seconds
        with RerankerClient(target, timeout=120) as client:
            while time.monotonic() < deadline:
                query = f"{QUERIES[next(counter) % len(QUERIES)]} {next(counter)}"
                started = time.perf_counter()
                client.rerank(query, documents)
                with lock:
                    latencies.append((time.perf_counter() - started) * 1000)

    threads = [threading.Thread(target=run) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


class WorstCaseCaller(threading.Thread):
    """Repeats the worst-case request until stopped; counts what completes."""

    def __init__(self, target: str, documents: list[str], priority: str) -> None:
        super().__init__()
        self.target, self.documents, self.priority = target, documents, priority
        self.stop = threading.Event()
        self.completed, self.errors, self.started_at = 0, [], time.monotonic()
        self.last_done_at = self.started_at

    def run(self) -> None:
        with RerankerClient(self.target, timeout=300, max_message_bytes=64 << 20) as client:
            while not self.stop.is_set():
                try:
                    client.rerank(SENTENCES[0], self.documents, top_k=1, priority=self.priority)
                    self.completed += 1
                    self.last_done_at = time.monotonic()
                except RerankerError as exc:
                    self.errors.append(exc.code.name)

    def figures(self) -> dict:
        """Requests completed, and pairs per second over the time they took (to the last one's answer)."""
        seconds = self.last_done_at - self.started_at
        return {"completed": self.completed, "errors": len(self.errors), "seconds": round(seconds, 1),
                "pairs_per_s": round(self.completed * len(self.documents) / seconds, 2) if self.completed else 0.0}


def summary(latencies: list[float]) -> dict[str, float]:
    values = np.array(latencies)
    return {"calls": len(values), "p50_ms": round(float(np.percentile(values, 50)), 1),
            "p99_ms": round(float(np.percentile(values, 99)), 1), "max_ms": round(float(values.max()), 1)}


def phases(target: str, documents: list[str], clients: int, seconds: float) -> dict:
    small_calls(target, 1, 2.0)  # warm up
    out = {"alone": summary(small_calls(target, clients, seconds))}
    for priority in ("interactive", "batch"):
        caller = WorstCaseCaller(target, documents, priority)
        caller.start()
        loaded = summary(small_calls(target, clients, seconds))
        caller.stop.set()
        caller.join()
        out[f"beside_worst_case_{priority}"] = loaded | {"worst_case_caller": caller.figures()}
    # The worst-case caller alone: what keeping an instance free costs it when nobody else calls.
    caller = WorstCaseCaller(target, documents, "interactive")
    caller.start()
    deadline = time.monotonic() + 4 * seconds
    while caller.completed < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    caller.stop.set()
    caller.join()
    out["worst_case_alone"] = {"worst_case_caller": caller.figures()}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=120)
    parser.add_argument("--document-chars", type=int, default=14000)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--gateways", default=",".join(GATEWAYS), help=f"comma-separated: {', '.join(GATEWAYS)}")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    model_dir = prepare("tiny")
    documents = worst_case_documents(args.documents, args.document_chars)
    size_mb = sum(len(d.encode()) for d in documents) / 1e6
    print(f"worst-case request: {len(documents)} documents x {args.document_chars} characters ({size_mb:.1f} MB)")
    result: dict = {"machine": machine_info(), "model": "tiny", "request_mb": round(size_mb, 1), "documents": len(documents),
                    "document_chars": args.document_chars, "clients": args.clients, "seconds": args.seconds,
                    "tokenization": [tokenization(model_dir, documents, n) for n in (512, 8192)], "gateways": {}}
    for name in args.gateways.split(","):
        gateway_settings, edit = GATEWAYS[name]
        with edited_triton(model_dir, edit or (lambda config: None)) as triton:
            settings = {"triton_endpoints": triton.grpc_url, "tokenizer": str(model_dir),
                        "max_message_bytes": str(64 << 20), **NO_CACHE, **gateway_settings}
            with GatewayProcess(settings) as gateway:
                result["gateways"][name] = phases(gateway.target, documents, args.clients, args.seconds)
    print(markdown(result))
    if not args.no_write:
        write_result("intake", result)
    return 0


def markdown(result: dict) -> str:
    rows = ["| gateway | phase | small p50 ms | small p99 ms | small calls | p99 / alone | worst-case requests done | its pairs/s |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, figures in result["gateways"].items():
        alone = figures["alone"]["p99_ms"]
        for phase, f in figures.items():
            caller = f.get("worst_case_caller", {})
            small = [f.get("p50_ms", ""), f.get("p99_ms", ""), f.get("calls", ""), f"{f['p99_ms'] / alone:.1f}x" if "p99_ms" in f else ""]
            rows.append(f"| {name} | {phase.replace('_', ' ')} | {' | '.join(map(str, small))} | "
                        f"{caller.get('completed', '')} | {caller.get('pairs_per_s', '')} |")
    return "\n".join(rows)


if __name__ == "__main__":
    raise SystemExit(main())
