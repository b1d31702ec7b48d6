"""Write the generated sections of docs/*.md from the code and data that hold their facts.

    make docs                           # python -m docs.generate: rewrite every generated section
    python -m docs.generate --check     # exit 1, naming them, if any section differs from what would be written

A generated section sits between two markers and is never edited by hand::

    <!-- generated: NAME (make docs) -->
    ...
    <!-- end generated: NAME -->

The settings table comes from ``server/ara_reranker_server/settings.py``, the Triton tables from the ``.pbtxt`` files and
``server/ara_reranker_server/triton_config.py``, the coupled limits from ``server/ara_reranker_model/limits.py``, the benchmark figures from
the committed results in ``bench/results/`` (``bench/summary.py``), the API reference from
``proto/reranker/v1/reranker.proto`` and its comments (``docs/proto_reference.py``), the gateway's metrics from
``server/ara_reranker_server/metrics.py``, the dashboard's panels from ``deploy/monitoring/grafana-dashboard.json``.
Change those, then run ``make docs``;
tests/test_docs.py fails while a section is stale.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Callable

DOCS = Path(__file__).resolve().parent

# The Triton model's knobs, in the order the table shows them: (field path in ara_reranker_server.triton_config.fields, meaning).
TRITON_KNOBS = [
    ("max_batch_size", "rows (pairs) per dynamic batch; one request may carry at most this many, so `chunk_size` must not exceed it"),
    ("dynamic_batching.max_queue_delay_microseconds",
     "how long the batcher waits to group concurrent requests when an instance is free (on CPU requests batch by queueing "
     "behind the running `execute()`, so it does not wait)"),
    ("dynamic_batching.default_queue_policy.max_queue_size",
     "not set: Triton's queue holds what the gateway sends, bounded by the gateway (`max_inflight_pairs`, "
     "`dispatch_window_tokens`). Setting it (beyond it Triton refuses and the gateway answers `RESOURCE_EXHAUSTED`) or "
     "`priority_levels` stops the batcher's prefetching: a request queued behind a busy instance can then wait up to "
     "500 ms ([api.md](api.md#priorities))"),
    ("instance_group", "instances (processes) per device"),
    ("parameters.model_dir",
     "model directory; relative to the repository's parent. Env `ARA_RERANKER_MODEL_DIR` overrides"),
    ("parameters.engine",
     "`torch` (reference) or `onnx` (ONNX Runtime; CUDA execution provider on GPU); what Info reports"),
    ("parameters.dtype",
     "`auto` = float16 with torch on GPU, float32 otherwise; or `float32`, `float16` (GPU), `bfloat16` (torch), `int8` "
     "(onnx, CPU). Info reports the precision this resolves to. Logits are upcast to float32 before the sigmoid"),
    ("parameters.max_batch_tokens", "token budget of one forward pass: rows × longest row of a micro-batch"),
    ("parameters.batch_overhead_tokens",
     "fixed cost of one forward pass, in tokens: micro-batches are the cut of the length-sorted rows that minimises padded "
     "tokens + this per pass (large: full batches, for GPUs; small: rows of unlike lengths kept apart, for CPUs)"),
    ("parameters.forward_workers", "micro-batches run side by side on this many threads (0 = one per core)"),
    ("parameters.num_threads", "intra-op threads of each forward pass (0 = framework default)"),
    ("parameters.low_priority_batch_tokens",
     "micro-batches of more padded tokens run on threads at nice +10 (Linux), so that a small request's pass on another "
     "instance goes first on a busy CPU (0 = none)"),
]

# Knobs of TRITON_KNOBS the shipped configs leave out on purpose (their rows say why).
UNSET_KNOBS = {"dynamic_batching.default_queue_policy.max_queue_size"}


def _value(fields: dict, path: str) -> str:
    if path == "instance_group":
        return f"`{fields['instance_group.0.kind']}`, count {fields['instance_group.0.count']}"
    return f"`{fields[path]}`" if path in fields else "not set"


def settings_table() -> str:
    from ara_reranker_server.settings import Settings

    return Settings.markdown_table()


def triton_parameters() -> str:
    from ara_reranker_server import triton_config

    gpu, cpu = (triton_config.fields(triton_config.read(triton_config.CONFIGS[k])) for k in ("gpu", "cpu"))
    rows = ["| knob | GPU | CPU | meaning |", "|---|---|---|---|"]
    rows += [f"| `{path.removeprefix('parameters.')}` | {_value(gpu, path)} | {_value(cpu, path)} | {meaning} |"
             for path, meaning in TRITON_KNOBS]
    return "\n".join(rows)


def cpu_differences() -> str:
    from ara_reranker_server import triton_config

    gpu, cpu = (triton_config.fields(triton_config.read(triton_config.CONFIGS[k])) for k in ("gpu", "cpu"))
    rows = ["| field | `config.pbtxt` (GPU) | `configs/cpu.pbtxt` (CPU) | why |", "|---|---|---|---|"]
    rows += [f"| `{path}` | {_value(gpu, path)} | {_value(cpu, path)} | {why} |" for path, why in triton_config.CPU_DIFFERENCES.items()]
    return "\n".join(rows)


def coupled_limits() -> str:
    from ara_reranker_model.limits import COUPLED_LIMITS

    rows = ["| rule | otherwise |", "|---|---|"]
    rows += [f"| `{limit.rule}` | {limit.why} |" for limit in COUPLED_LIMITS]
    return "\n".join(rows)


def proto_reference() -> str:
    from docs import proto_reference

    return proto_reference.markdown()


def gateway_metrics() -> str:
    """One row per metric the gateway registers: its exported name, type, labels and help text."""
    from prometheus_client.metrics import MetricWrapperBase

    from ara_reranker_server.metrics import GatewayMetrics

    rows = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for metric in vars(GatewayMetrics(["m"])).values():
        if isinstance(metric, MetricWrapperBase):
            name = metric._name + ("_total" if metric._type == "counter" else "")
            labels = ", ".join(f"`{label}`" for label in metric._labelnames)
            rows.append(f"| `{name}` | {metric._type} | {labels} | {metric._documentation} |")
    return "\n".join(rows)


def dashboard_panels() -> str:
    """The Grafana dashboard's rows and, under each, its panels' titles, in the dashboard's order."""
    import json

    dashboard = json.loads((DOCS.parent / "deploy" / "monitoring" / "grafana-dashboard.json").read_text(encoding="utf-8"))
    rows: list[tuple[str, list[str]]] = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            rows.append((panel["title"], [p["title"] for p in panel.get("panels", [])]))
        elif rows:
            rows[-1][1].append(panel["title"])
        else:
            rows.append(("(top)", [panel["title"]]))
    return "\n".join(f"- **{title}**: {'; '.join(panels)}." for title, panels in rows)


def _bench(section: str) -> Callable[[], str]:
    def render() -> str:
        from bench import summary

        return summary.SECTIONS[section]()

    return render


# (file under docs/, section name) -> what writes it
SECTIONS: dict[tuple[str, str], Callable[[], str]] = {
    ("configuration.md", "settings"): settings_table,
    ("configuration.md", "triton-parameters"): triton_parameters,
    ("configuration.md", "cpu-differences"): cpu_differences,
    ("configuration.md", "coupled-limits"): coupled_limits,
    ("api.md", "proto"): proto_reference,
    ("api.md", "queued-wait"): _bench("queued-wait"),
    ("monitoring.md", "gateway-metrics"): gateway_metrics,
    ("monitoring.md", "dashboard-panels"): dashboard_panels,
    ("benchmarks.md", "run-context"): _bench("run-context"),
    ("benchmarks.md", "run"): _bench("run"),
    ("benchmarks.md", "targets"): _bench("targets"),
    ("benchmarks.md", "other"): _bench("other"),
    ("benchmarks.md", "windows"): _bench("windows"),
    ("benchmarks.md", "llm-rerankers"): _bench("llm-rerankers"),
    ("benchmarks.md", "reproduce"): _bench("reproduce"),
    ("benchmarks.md", "workloads"): _bench("workloads"),
    ("benchmarks.md", "overhead"): _bench("overhead"),
    ("benchmarks.md", "tracing"): _bench("tracing"),
    ("benchmarks.md", "http-overhead"): _bench("http-overhead"),
    ("benchmarks.md", "cache"): _bench("cache"),
    ("benchmarks.md", "intake"): _bench("intake"),
    ("benchmarks.md", "default-price"): _bench("default-price"),
    ("benchmarks.md", "big-message"): _bench("big-message"),
    ("deployment.md", "gateway-capacity"): _bench("gateway-capacity"),
    ("architecture.md", "chaos"): _bench("chaos"),
    ("precision.md", "precision"): _bench("precision"),
    ("../README.md", "headline"): _bench("headline"),
}


def _pattern(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- generated: {re.escape(name)} \(make docs\) -->\n).*?(<!-- end generated: {re.escape(name)} -->)", re.S)


def rendered(file: str, text: str) -> str:
    """``text`` (the markdown of docs/``file``) with each of its generated sections written anew."""
    for (owner, name), render in SECTIONS.items():
        if owner != file:
            continue
        pattern = _pattern(name)
        if not pattern.search(text):
            raise ValueError(f"docs/{file} lacks the markers of generated section {name!r}")
        body = render().strip("\n")
        text = pattern.sub(lambda m, body=body: f"{m.group(1)}{body}\n{m.group(2)}", text)
    return text


def stale() -> list[str]:
    """The docs files whose generated sections differ from what ``make docs`` would write."""
    files = sorted({file for file, _ in SECTIONS})
    return [file for file in files if rendered(file, (DOCS / file).read_text(encoding="utf-8")) != (DOCS / file).read_text(encoding="utf-8")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the generated sections of docs/*.md.")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if a section is stale")
    args = parser.parse_args(argv)
    if args.check:
        outdated = stale()
        for file in outdated:
            print(f"docs/{file} is stale: run `make docs`", file=sys.stderr)
        return 1 if outdated else 0
    for file in sorted({file for file, _ in SECTIONS}):
        path = DOCS / file
        text = path.read_text(encoding="utf-8")
        new = rendered(file, text)
        if new != text:
            path.write_text(new, encoding="utf-8")
            print(f"wrote docs/{file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
