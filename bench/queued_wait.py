"""How long a request queued behind a busy model instance waits once the instance is free: ``python -m bench.queued_wait``
(about a minute on 2 cores).

Straight to a real tritonserver serving the tiny offline model (no gateway), for each Triton configuration in turn:
a request of ``--busy-rows`` rows of ``--busy-tokens`` tokens occupies the one instance; ``--lag-ms`` later a one-row
request arrives and nothing else does. Its wait after the instance frees is the gap between the two answers, less its
own compute (measured alone in the same run; a negative figure is a wait of none). ``--tries`` tries, each after the batcher has been idle for a second.

Configurations: ``shipped`` (configs/cpu.pbtxt as it is), ``priority-levels`` (the same plus ``priority_levels: 2``),
``bounded-queue`` (plus ``max_queue_size: 512``). With either addition Triton's dynamic batcher stops prefetching;
a request that arrives while every instance is busy is then not taken when the instance frees but when the next
request arrives, or when the batcher's idle wait (500 ms) runs out.

Writes ``bench/results/queued-wait-<timestamp>.json`` and prints a table.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import tritonclient.grpc as triton_grpc

from ara_reranker_model.inputs import padded_rows
from ara_reranker_model.store import prepare
from ara_reranker_server.launcher.triton_launcher import MODEL_NAME
from bench import results
from bench.markdown import table
from bench.repository import edited_triton
from bench.stats import percentile
from bench.triton_direct import token_inputs

# name -> fields set in the CPU config's dynamic_batching block (dotted paths for nested messages)
CONFIGS: dict[str, dict[str, int]] = {
    "shipped": {},
    "priority-levels": {"priority_levels": 2, "default_priority_level": 1},
    "bounded-queue": {"default_queue_policy.max_queue_size": 512},
}


def pbtxt(fields: dict[str, int]) -> str:
    """``fields`` as they read in a config: ``default_queue_policy { max_queue_size: 512 }``."""
    out = []
    for path, value in fields.items():
        *parents, leaf = path.split(".")
        out.append("".join(f"{p} {{ " for p in parents) + f"{leaf}: {value}" + " }" * len(parents))
    return " ".join(out)


def inputs(rows: int, tokens: int) -> list:
    """Triton inputs of ``rows`` distinct rows of ``tokens`` tokens each (<s> ... </s>)."""
    return token_inputs(*padded_rows([[0] + [5 + (i + j) % 1000 for j in range(tokens - 2)] + [2] for i in range(rows)], 1))


def timed(client, request) -> float:
    client.infer(MODEL_NAME, request, client_timeout=120)
    return time.perf_counter()


def tries(url: str, busy_rows: int, busy_tokens: int, lag_s: float, count: int) -> dict:
    busy, small = inputs(busy_rows, busy_tokens), inputs(1, 16)
    with triton_grpc.InferenceServerClient(url) as a, triton_grpc.InferenceServerClient(url) as b:
        for _ in range(3):  # warm up
            timed(a, busy), timed(b, small)
        alone = []
        for _ in range(5):
            t = time.perf_counter()
            alone.append(timed(b, small) - t)
        busy_s, waits = [], []
        small_s = float(np.median(alone))
        for _ in range(count):
            time.sleep(1.0)  # the batcher idle: it is in its long wait when the busy request comes
            ends: dict[str, float] = {}
            t = time.perf_counter()
            runner = threading.Thread(target=lambda ends=ends: ends.__setitem__("busy", timed(a, busy)))
            runner.start()
            time.sleep(lag_s)
            ends["small"] = timed(b, small)
            runner.join()
            busy_s.append(ends["busy"] - t)
            waits.append(ends["small"] - ends["busy"] - small_s)
    ms = lambda values, q: percentile([v * 1000 for v in values], q, 1)  # noqa: E731
    return {"busy_ms_p50": ms(busy_s, 50), "small_alone_ms_p50": ms(alone, 50), "tries": count,
            "wait_after_free_ms": {"p50": ms(waits, 50), "p90": ms(waits, 90), "max": ms(waits, 100)},
            "waits_ms": [round(w * 1000, 1) for w in waits]}


def main(argv: list[str] | None = None) -> int:
    parser = results.parser(__doc__)
    parser.add_argument("--busy-rows", type=int, default=8)
    parser.add_argument("--busy-tokens", type=int, default=512)
    parser.add_argument("--lag-ms", type=float, default=20.0)
    parser.add_argument("--tries", type=int, default=20)
    results.add_names(parser, "--configs", list(CONFIGS), "Triton configurations")
    args = parser.parse_args(argv)
    model_dir = prepare("tiny")
    result: dict = {"model": "tiny", "busy_rows": args.busy_rows, "busy_tokens": args.busy_tokens,
                    "lag_ms": args.lag_ms, "configs": {}}
    for name in args.configs:
        with edited_triton(model_dir, {f"dynamic_batching.{path}": value for path, value in CONFIGS[name].items()}) as triton:
            result["configs"][name] = tries(triton.grpc_url, args.busy_rows, args.busy_tokens, args.lag_ms / 1000, args.tries)
        print(name, result["configs"][name]["wait_after_free_ms"], flush=True)
    results.finish("queued-wait", "bench.queued_wait", argv, args, result, markdown)
    return 0


def markdown(result: dict) -> str:
    rows = []
    for name, f in result["configs"].items():
        w = f["wait_after_free_ms"]
        addition = pbtxt(CONFIGS.get(name, {}))
        label = f"{name} (`{addition}`)" if addition else f"{name} (configs/cpu.pbtxt)"
        stalled = sum(1 for x in f["waits_ms"] if x > 100)
        rows.append((label, f["busy_ms_p50"], f["tries"], stalled, max(w["p90"], 0.0), max(w["max"], 0.0)))
    return "\n".join(table(["Triton config", "busy request ms", "tries", "queued request waited > 100 ms after the instance freed",
                            "its wait after the instance freed: p90 ms", "max ms"], rows, "lrrrrr"))


if __name__ == "__main__":
    raise SystemExit(main())
