"""Where a small request's time goes: ``python -m bench.overhead`` (~2 minutes).

The same 10-document requests (the main benchmark's workload), one at a time, interleaved in a shuffled
order every round so that a noisy machine disturbs them alike, through:

- ``transformers``: the pairs tokenized with padding and scored in one forward pass by transformers directly (as
  ``CrossEncoder.predict`` does), torch's default threads, timed in its own process: the reference;
- ``in-process``: the benchmark's in-process limit called directly (tokenize + the model.py recipe, its threads);
- ``triton``: Triton alone, pre-tokenized padded tensors sent with tritonclient (no gateway);
- ``gateway``: reranker.v1 through the gateway (the Python client), the service as callers see it.

The same three paths also carry the smallest request (one short document), and the gateway an empty call
(Info): what each hop costs whatever the request's size, i.e. the floor under the overhead. So does a bare relay
(bench/relay.py: a Python gRPC server answering with one Triton call made as the gateway makes it, nothing else):
the two hops alone, and the gateway's own work as the gateway's p50 over the relay's.

With ``--tracing`` a second service runs beside the first with OpenTelemetry tracing on (gateway and Triton,
every call sampled, exported to a receiver on loopback, tools/otlp_receiver.py), and its two gateway paths are
interleaved with the others: what tracing costs a call, against the same service untraced.

``overhead`` is the gateway's p50 minus the transformers p50 (what a caller pays over scoring in-process), and
minus the in-process recipe's p50 (what the transports add to the same recipe). The gateway call is then
taken apart with the gateway's own timings (RerankResponse.timings) and Triton's counters (averages per
call): client and gRPC to the gateway, gateway work outside tokenization and Triton, tokenization, the
Triton round trip, Triton's queue, model.py's execute() (compute_infer) and the forward passes in it.

Writes ``bench/results/overhead-<timestamp>.json`` (``tracing-overhead-<timestamp>.json`` with ``--tracing``) and
prints a table. Offline random-weight model.
"""

from __future__ import annotations

import contextlib
import time

import numpy as np

from ara_reranker_client import RerankerClient
from ara_reranker_client.v1 import reranker_pb2
from ara_reranker_model.inputs import padded_rows
from ara_reranker_server.launcher.child_process import wait_until
from ara_reranker_server.launcher.triton_launcher import TRITON_SERVICE_NAME
from bench import results
from bench.markdown import table
from bench.relay import Relay
from bench.stats import percentile
from bench.systems import NO_CACHE, PlainTransformers, ServiceSystem, triton_metrics
from bench.triton_direct import token_inputs
from bench.worker import make_system
from bench.workload import make_workload
from tools.otlp_receiver import OtlpReceiver

_TRITON = {  # Triton's cumulative counters (microseconds), and model.py's forward-pass seconds
    "request_us": "nv_inference_request_duration_us",
    "queue_us": "nv_inference_queue_duration_us",
    "compute_input_us": "nv_inference_compute_input_duration_us",
    "compute_infer_us": "nv_inference_compute_infer_duration_us",
    "compute_output_us": "nv_inference_compute_output_duration_us",
    "forward_s": "ara_reranker_forward_duration_seconds_sum",
    "requests": "nv_inference_request_success",
}


def _counters(url: str) -> dict[str, float]:
    return triton_metrics(url, _TRITON)


def _all_reported(url: str) -> None:
    """Wait until model.py has reported (it does so every fraction of a second) every row Triton has counted."""
    names = {"reported": "ara_reranker_execute_rows_sum", "inferred": "nv_inference_count"}
    wait_until(lambda: (rows := triton_metrics(url, names))["reported"] >= rows["inferred"], 30,
               "model.py's metrics to report every row Triton counted", lambda: str(triton_metrics(url, names)), poll_s=0.05)


def main(argv: list[str] | None = None) -> int:
    parser = results.parser(__doc__, model="tiny", engine="torch")  # torch: what make run serves
    parser.add_argument("--count", type=int, default=300, help="calls per path")
    parser.add_argument("--docs", type=int, default=10)
    parser.add_argument("--tracing", action="store_true", help="also a traced service (OpenTelemetry on, every call sampled)")
    args = parser.parse_args(argv)

    import tritonclient.grpc as tg
    from transformers import AutoTokenizer

    from bench.run import prepare_model

    model_dir = prepare_model(args.model, args.engine == "onnx")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    requests = make_workload(tokenizer, requests=32, docs_per_request=args.docs).requests
    tensors = [padded_rows(tokenizer([r.query] * len(r.documents), r.documents, truncation="only_second",
                                     max_length=tokenizer.model_max_length)["input_ids"], tokenizer.pad_token_id)
               for r in requests]
    limit = make_system(f"limit-{args.engine}", model_dir, {})
    small_query, small_document = "ما عاصمة مصر؟", "القاهرة هي عاصمة مصر."
    with contextlib.ExitStack() as stack:
        stack.enter_context(limit)
        plain = stack.enter_context(PlainTransformers(model_dir))
        service = stack.enter_context(ServiceSystem(model_dir, args.engine, gateway_args=NO_CACHE))
        receiver = traced = None
        if args.tracing:
            receiver = stack.enter_context(OtlpReceiver())
            traced = stack.enter_context(ServiceSystem(model_dir, args.engine, gateway_args=NO_CACHE,
                                                       otel_env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}))
        triton = tg.InferenceServerClient(service.triton.grpc_url)
        # The two hops with nothing between them (bench/relay.py), called as the gateway is.
        relay = stack.enter_context(Relay(service.triton.grpc_url, model_dir, small_query, small_document))
        relay_client = stack.enter_context(RerankerClient(relay.target, timeout=60))

        def direct(i: int, given=None):
            ids, mask = given if given is not None else tensors[i]
            return triton.infer("ara_reranker", token_inputs(ids, mask)).as_numpy("logits")

        timings: list = []

        def gateway(i: int):
            r = requests[i]
            response = service.client.stub.Rerank(reranker_pb2.RerankRequest(query=r.query, documents=r.documents), timeout=60)
            timings.append(response.timings)

        small_request = reranker_pb2.RerankRequest(query=small_query, documents=[small_document])
        small_tensors = padded_rows(tokenizer([small_query], [small_document])["input_ids"], tokenizer.pad_token_id)

        paths = {"transformers": lambda i: plain.logits(requests[i].query, requests[i].documents)[1],
                 "in-process": lambda i: limit.rerank_direct(requests[i].query, requests[i].documents),
                 "triton": direct, "gateway": gateway}
        if traced is not None:
            paths["gateway, traced"] = lambda i: traced.client.stub.Rerank(
                reranker_pb2.RerankRequest(query=requests[i].query, documents=requests[i].documents), timeout=60)
        # The floors, measured after (so that Triton's counters above hold only the 10-document requests):
        # the smallest request through each path, and an empty call to the gateway.
        floors = {"transformers, 1 short document": lambda i: plain.logits(small_query, [small_document])[1],
                  "in-process, 1 short document": lambda i: limit.rerank_direct(small_query, [small_document]),
                  "triton, 1 short document": lambda i: direct(i, small_tensors),
                  "gateway, 1 short document": lambda i: service.client.stub.Rerank(small_request, timeout=60),
                  "relay, 1 short document": lambda i: relay_client.stub.Rerank(small_request, timeout=60),
                  "gateway, empty call (Info)": lambda i: service.client.stub.Info(reranker_pb2.InfoRequest(), timeout=60)}
        if traced is not None:
            floors["gateway, 1 short document, traced"] = lambda i: traced.client.stub.Rerank(small_request, timeout=60)
        latencies: dict[str, list[float]] = {name: [] for name in (*paths, *floors)}
        rng = np.random.default_rng(0)
        warm = max(5, args.count // 10)
        for phase in (paths, floors):
            for round_ in range(warm + args.count):
                if round_ == warm and phase is paths:
                    timings.clear()
                    _all_reported(service.triton.metrics_url)
                    before = _counters(service.triton.metrics_url)
                i = round_ % len(requests)
                for name in rng.permutation(list(phase)):
                    started = time.perf_counter()
                    inside = phase[name](i)  # seconds, for a path timed where it runs (transformers)
                    if round_ >= warm:
                        took = inside if isinstance(inside, float) else time.perf_counter() - started
                        latencies[name].append(took * 1000)
            if phase is paths:
                _all_reported(service.triton.metrics_url)
                after = _counters(service.triton.metrics_url)
        if receiver is not None:  # every traced call's spans reach the receiver: the exporter kept up
            calls_traced = (warm + args.count) * 2  # one Triton request each
            receiver.wait_for(lambda got: sum(s.name.startswith("rerank ") for s in got) >= calls_traced, 60)
            try:  # Triton 2.51 misses the trace context of about one gRPC request in a hundred: count what came
                receiver.wait_for(lambda got: sum(s.name == "InferRequest" for s in got) >= calls_traced, 15)
            except TimeoutError:
                pass
            spans = receiver.snapshot()

    p50 = {name: percentile(v, 50) for name, v in latencies.items()}
    calls = after["requests"] - before["requests"]  # Triton requests: the gateway's and the direct ones
    per = {k: (after[k] - before[k]) / calls for k in _TRITON if k != "requests"}
    gateway_total = np.mean([t.total_ns for t in timings]) / 1e6
    tokenization = np.mean([t.tokenization_ns for t in timings]) / 1e6
    inference = np.mean([t.inference_ns for t in timings]) / 1e6
    result = {
        "model": args.model, "engine": args.engine, "docs": args.docs, "count": args.count,
        "p50_ms": {k: round(v, 3) for k, v in p50.items()},
        "p99_ms": {k: percentile(v, 99, 3) for k, v in latencies.items()},
        "overhead_p50_ms": {  # the gateway over scoring in-process, for the 10-document requests and for one document
            f"{args.docs} documents over transformers": round(p50["gateway"] - p50["transformers"], 3),
            "1 short document over transformers": round(p50["gateway, 1 short document"] - p50["transformers, 1 short document"], 3),
            f"{args.docs} documents over the in-process recipe": round(p50["gateway"] - p50["in-process"], 3),
            "1 short document over the in-process recipe": round(
                p50["gateway, 1 short document"] - p50["in-process, 1 short document"], 3),
            f"the recipe over transformers, {args.docs} documents": round(p50["in-process"] - p50["transformers"], 3),
            "the recipe over transformers, 1 short document": round(
                p50["in-process, 1 short document"] - p50["transformers, 1 short document"], 3),
        },
        "floor_p50_ms": {  # fixed costs: what one short document adds over in-process, per hop
            "gateway over in-process": round(p50["gateway, 1 short document"] - p50["in-process, 1 short document"], 3),
            "Triton (tritonclient, gRPC, Python backend) over in-process": round(
                p50["triton, 1 short document"] - p50["in-process, 1 short document"], 3),
            "an empty gRPC call to the gateway": round(p50["gateway, empty call (Info)"], 3),
            "the two hops alone (the relay: a bare Python gRPC server making the gateway's Triton call) over in-process":
                round(p50["relay, 1 short document"] - p50["in-process, 1 short document"], 3),
            "the gateway's own work (the gateway over the relay)":
                round(p50["gateway, 1 short document"] - p50["relay, 1 short document"], 3),
        },
        "gateway_call_mean_ms": {  # the gateway call taken apart (means over the measured calls)
            "client and gRPC to the gateway": round(float(np.mean(latencies["gateway"])) - gateway_total, 3),
            "gateway, outside tokenization and Triton": round(gateway_total - tokenization - inference, 3),
            "tokenization": round(tokenization, 3),
            "Triton round trip (tritonclient, gRPC, Triton)": round(inference, 3),
        },
        "triton_per_request_mean_ms": {  # Triton's own counters, per Triton request (gateway's and direct)
            "request (queue + compute)": round(per["request_us"] / 1000, 3),
            "queue": round(per["queue_us"] / 1000, 3),
            "compute input": round(per["compute_input_us"] / 1000, 3),
            "compute infer (model.py execute)": round(per["compute_infer_us"] / 1000, 3),
            "forward passes in it": round(per["forward_s"] * 1000, 3),
            "compute output": round(per["compute_output_us"] / 1000, 3),
        },
    }
    if args.tracing:
        result["tracing"] = {  # the traced service against the untraced one, same calls interleaved
            "overhead_p50_ms": {
                f"{args.docs} documents": round(p50["gateway, traced"] - p50["gateway"], 3),
                "1 short document": round(p50["gateway, 1 short document, traced"] - p50["gateway, 1 short document"], 3),
            },
            "calls": calls_traced,
            "spans_received": {"gateway": sum(s.service != TRITON_SERVICE_NAME for s in spans),
                               "triton": sum(s.service == TRITON_SERVICE_NAME for s in spans)},
            "triton_requests_traced": sum(s.name == "InferRequest" for s in spans),
        }
    # traced runs apart: docs/benchmarks.md's overhead figures stay those of the plain run
    results.finish("tracing-overhead" if args.tracing else "overhead", "bench.overhead", argv, args, result, markdown)
    return 0


def markdown(result: dict) -> str:
    p50, p99 = result["p50_ms"], result["p99_ms"]
    rows = table(["path", "p50 ms", "p99 ms"], [(name, f"{p50[name]:.2f}", f"{p99[name]:.2f}") for name in p50], "lrr")
    rows += ["", *_ms_table("overhead (p50 − p50)", result["overhead_p50_ms"]), ""]
    if "tracing" in result:
        tracing = result["tracing"]
        costs = ", ".join(f"{what} {ms:+.2f} ms" for what, ms in tracing["overhead_p50_ms"].items())
        rows += [f"Tracing on (OpenTelemetry, every call sampled and exported; the traced service's p50 − the untraced "
                 f"one's): {costs}. Spans received of {tracing['calls']:,} traced calls: "
                 f"{tracing['spans_received']['gateway']:,} from the gateway, {tracing['spans_received']['triton']:,} "
                 f"from Triton (its trace of {tracing['triton_requests_traced']:,} requests).", ""]
    if "floor_p50_ms" in result:
        rows += [*_ms_table("the floor: fixed cost per request (p50)", result["floor_p50_ms"]), ""]
    rows += _ms_table("the gateway call, taken apart (means)", result["gateway_call_mean_ms"])
    rows += ["", *_ms_table("Triton, per request (means)", result["triton_per_request_mean_ms"])]
    return "\n".join(rows)


def _ms_table(title: str, figures: dict[str, float]) -> list[str]:
    return table([title, "ms"], [(k, f"{v:.2f}") for k, v in figures.items()], "lr")


if __name__ == "__main__":
    raise SystemExit(main())
