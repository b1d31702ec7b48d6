"""What one worst-case request costs everyone else: ``python -m bench.intake`` (about a minute).

A worst-case request carries as many of the longest documents as the gRPC message limit admits
(``--documents`` x ``--document-chars`` Arabic characters, ~26 MB by default). Two measurements:

1. Tokenization alone, in-process: the gateway's tokenizer on that request, as it runs now (each
   document cut by characters before tokenizing, in slices of documents) against tokenizing every
   document whole first (what the gateway did before), at max input length 512 and at 8192.
2. End to end, on a real Triton + gateway (tiny offline model, max_input_length 512): latency of small
   requests (10 short documents) from ``--clients`` callers, alone and then while one caller sends the
   worst-case request over and over.

Writes ``bench/results/intake-<timestamp>.json`` and prints a table. Random-weight offline model:
scores mean nothing, tokenization and compute are the real model's.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import numpy as np

from ara_reranker_client import RerankerClient, RerankerError
from ara_reranker_model.store import prepare
from ara_reranker_server.launcher.gateway_process import GatewayProcess
from ara_reranker_server.launcher.triton_launcher import TritonOptions, TritonServer
from ara_reranker_server.tokenization import PairTokenizer
from bench.run import machine_info, write_result
from bench.systems import NO_CACHE
from tools.arabic_text import QUERIES, SENTENCES, mixed_passages, passage


def worst_case_documents(count: int, chars: int) -> list[str]:
    rng = np.random.default_rng(0)
    text = passage(rng, chars // 40 + 10)
    return [text[i % 97 :][:chars] for i in range(count)]


def tokenization(model_dir: Path, documents: list[str], max_length: int) -> dict[str, float]:
    """Seconds to tokenize the request as the gateway does now, and with every document whole."""
    from tokenizers import Tokenizer

    tokenizer = PairTokenizer(Tokenizer.from_file(str(model_dir / "tokenizer.json")), max_length, pad_id=1, threads=1)
    query, room = tokenizer.room(QUERIES[0])
    started = time.perf_counter()
    for start in range(0, len(documents), 32):
        tokenizer.encode_documents(query, room, documents[start : start + 32], True, start)
    now = time.perf_counter() - started
    started = time.perf_counter()
    tokenizer._tok.encode_batch(documents, add_special_tokens=False)
    whole = time.perf_counter() - started
    tokenizer.close()
    return {"max_length": max_length, "now_s": round(now, 3), "whole_documents_s": round(whole, 3)}


def small_calls(target: str, clients: int, seconds: float) -> list[float]:
    """Latencies (ms) of 10-document requests from ``clients`` callers for ``seconds``."""
    latencies: list[float] = []
    lock = threading.Lock()
    documents = mixed_passages(np.random.default_rng(1), 10, max_sentences=3)

    def run() -> None:
        deadline = time.monotonic() + seconds
        with RerankerClient(target, timeout=60) as client:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                client.rerank(QUERIES[1], documents)
                with lock:
                    latencies.append((time.perf_counter() - started) * 1000)

    threads = [threading.Thread(target=run) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


def worst_case_loop(target: str, documents: list[str], stop: threading.Event, durations: list[float]) -> None:
    with RerankerClient(target, timeout=120, max_message_bytes=64 << 20) as client:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                client.rerank(SENTENCES[0], documents, top_k=1)
            except RerankerError as exc:  # e.g. overloaded: counted, not fatal
                print(f"worst-case request: {exc.code.name}")
            durations.append(time.perf_counter() - started)


def summary(latencies: list[float]) -> dict[str, float]:
    values = np.array(latencies)
    return {"calls": len(values), "p50_ms": round(float(np.percentile(values, 50)), 1),
            "p99_ms": round(float(np.percentile(values, 99)), 1), "max_ms": round(float(values.max()), 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=200)
    parser.add_argument("--document-chars", type=int, default=65536)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args(argv)
    model_dir = prepare("tiny")
    documents = worst_case_documents(args.documents, args.document_chars)
    size_mb = sum(len(d.encode()) for d in documents) / 1e6
    print(f"worst-case request: {len(documents)} documents x {args.document_chars} characters ({size_mb:.1f} MB)")
    result: dict = {"machine": machine_info(), "request_mb": round(size_mb, 1), "documents": len(documents),
                    "document_chars": args.document_chars, "tokenization": [tokenization(model_dir, documents, n) for n in (512, 8192)]}
    for row in result["tokenization"]:
        print(f"tokenize at max length {row['max_length']}: {row['now_s']} s now, {row['whole_documents_s']} s tokenizing whole documents")

    with TritonServer(TritonOptions(model_dir=model_dir)) as triton:
        args_gw = {"triton_endpoints": triton.grpc_url, "tokenizer": str(model_dir), "max_input_length": "512",
                   "max_message_bytes": str(64 << 20), "max_documents": str(len(documents))}
        with GatewayProcess(args_gw | NO_CACHE) as gateway:
            small_calls(gateway.target, 1, 2.0)  # warm up
            alone = summary(small_calls(gateway.target, args.clients, args.seconds))
            stop, durations = threading.Event(), []
            heavy = threading.Thread(target=worst_case_loop, args=(gateway.target, documents, stop, durations))
            heavy.start()
            loaded = summary(small_calls(gateway.target, args.clients, args.seconds))
            stop.set()
            heavy.join()
    result["small_calls_alone"], result["small_calls_beside_worst_case"] = alone, loaded
    result["worst_case_request_s"] = [round(d, 2) for d in durations]
    print(f"small calls alone:            {alone}")
    print(f"small calls beside worst case: {loaded}")
    print(f"worst-case request durations (s): {result['worst_case_request_s']}")
    write_result("intake", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
