"""The figures the docs quote, as markdown, computed from the committed results in ``bench/results/``.

Each benchmark writes its results there in one format (bench/results.py: ``<kind>-<timestamp>.json``; the
main benchmark ``<timestamp>.json`` and ``latest.json``). The docs never copy a figure by hand: ``make docs`` writes these
sections into docs/benchmarks.md and docs/deployment.md, and tests/test_docs.py fails when the docs
differ from what the results say. Rerun a benchmark, commit its result, run ``make docs``.

    python -m bench.summary            # every section, as the docs show them
    python -m bench.summary windows    # one of them: run, run-context, targets, other, windows, gateway-capacity,
                                       # workloads, http-overhead, cache, intake, big-message, overhead, ...
"""

from __future__ import annotations

import sys
from typing import Callable

from bench import report, results
from bench.markdown import table

__all__ = ["SECTIONS"]


def _load(kind: str | None = None) -> tuple[dict, str]:
    """The figures of the newest result of ``kind`` (None: the main benchmark's) and its file, as the docs cite it."""
    result = results.newest(kind)
    return result.data, result.file


def _range(values, fmt: str = "{:,.0f}", unit: str = "") -> str:
    low, high = fmt.format(min(values)), fmt.format(max(values))
    return f"{low}{unit}" if low == high else f"{low}-{high}{unit}"


def _levels(run: dict, system: str) -> dict[int, dict]:
    return {level["concurrency"]: level for s in run["systems"] if s["system"] == system for level in s.get("levels", [])}


def run_context() -> str:
    """When and where the main benchmark ran, with what, and how long it took."""
    result = results.newest()
    run, machine = result.data, result.machine
    meta, work = run["meta"], run["workload"]
    versions = machine["versions"]
    minutes = sum(s.get("wall_s", 0) for s in run["systems"]) / 60
    tokens = work["document_tokens"]
    return (
        f"`{result.command}`, run {results.when(meta['timestamp'])} (commit {result.commit}) on {machine['cpu']}, "
        f"{machine['cores']} cores, {machine['memory_gib']} GiB, GPU: {machine['gpu']}; torch {versions['torch']}, "
        f"onnxruntime {versions['onnxruntime']}, transformers {versions['transformers']}, nvidia-pytriton "
        f"{versions['nvidia-pytriton']}. Model `{meta['model']}` ({meta['model_note']}), max length {meta['max_length']}. "
        f"Workload: {work['requests']} requests of {work['docs_per_request']} documents of {tokens['min']}-{tokens['max']} "
        f"tokens (median {tokens['p50']:.0f}), seed {work['seed']}. The systems' runs took {minutes:.0f} minutes. "
        f"Files: `bench/results/{meta['timestamp']}.{{json,md,png}}` (`latest.*` are copies)."
    )


def run_table() -> str:
    """The main benchmark's table. The per-request overhead is stated once, from its own measurement (overhead())."""
    run, _ = _load()
    return report.results_table(run)


def targets() -> str:
    """The benchmark's targets and how the run did against each, with the figures."""
    run, _ = _load()
    verdicts = run["targets"]
    said = lambda name: "met" if verdicts[name]["ok"] else "**missed**"  # noqa: E731
    rows = ["| target | result |", "|---|---|"]
    if "saturation_vs_limit" in verdicts:
        v = verdicts["saturation_vs_limit"]
        rows.append(f"| service at saturation >= 0.9 x the in-process limit (best engine) | {said('saturation_vs_limit')}: "
                    f"{v['service_pairs_per_s']:.1f} vs {v['limit_pairs_per_s']:.1f} pairs/s ({v['limit']}), {v['ratio']:.2f}x |")
    if "ahead_of_peers" in verdicts:
        v = verdicts["ahead_of_peers"]
        mine, peers = _levels(run, v["service"]), [_levels(run, p) for p in v["peers"]]
        rate = [mine[c]["pairs_per_s"] / max(p[c]["pairs_per_s"] for p in peers) for c in mine if all(c in p for p in peers)]
        p99 = [mine[c]["p99_ms"] / min(p[c]["p99_ms"] for p in peers) for c in mine if all(c in p for p in peers)]
        rows.append(f"| ahead of sentence-transformers and of Infinity's best engine at every concurrency, throughput and "
                    f"p99 | {said('ahead_of_peers')} ({len(v['misses'])} misses): throughput {_range(rate, '{:.1f}', 'x')} "
                    f"the best peer's at each level, p99 {_range(p99, '{:.2f}', 'x')} the best peer's |")
    if "padding_ratio" in verdicts:
        v = verdicts["padding_ratio"]
        rows.append(f"| padding ratio >= 0.9 on the mixed-length workload | {said('padding_ratio')}: "
                    f"{v['min']:.3f}-{v['max']:.3f} at every level |")
    over, over_path = _load("overhead")  # the dedicated measurement, not the run's quick one: one figure everywhere
    ten, one = overhead_figures(over)
    rows.append(f"| gateway + Triton overhead at p50 over plain transformers (tiny model): <= 3.5 ms for 10 documents, "
                f"<= 2 ms for one short document | {'met' if ten <= 3.5 else '**missed**'}: {ten:.2f} ms; "
                f"{'met' if one <= 2 else '**missed**'}: {one:.2f} ms (`{over_path}`, [per-request overhead](#per-request-overhead)) |")
    limit_torch, limit_onnx = _levels(run, "limit-torch"), _levels(run, "limit-onnx")
    gain = [limit_onnx[c]["pairs_per_s"] / limit_torch[c]["pairs_per_s"] - 1 for c in limit_onnx if c in limit_torch]
    busiest = _levels(run, verdicts.get("ahead_of_peers", {}).get("service", "service-onnx"))
    top = busiest[max(busiest)] if busiest else {}
    facts = []
    if gain:
        facts.append(f"ONNX Runtime runs {_range([100 * g for g in gain], '{:.0f}', '%')} faster than the torch engine "
                     "in-process (limit-onnx vs limit-torch, by level)")
    if "triton_batch_rows" in top:
        facts.append(f"at {max(busiest)} clients Triton's dynamic batches held {top['triton_batch_rows']:.0f} rows / "
                     f"{top['triton_batch_requests']:.0f} requests per execution")
    return "\n".join(rows) + ("\n\nFrom the same run: " + "; ".join(facts) + "." if facts else "")


def other_measurements() -> str:
    """One row per single-question benchmark: the command, the question, the answer, the file."""
    side, side_path = _load("side-by-side")
    passes = [side["runs"][i : i + 2] for i in range(0, len(side["runs"]), 2)]
    capacity, capacity_path = _load("gateway-capacity")
    levels = capacity["gateway"]
    return "\n".join([
        "| command | question | result | file |",
        "|---|---|---|---|",
        f"| `python -m bench.side_by_side` | does an idle second model ({side['beside_idle']}) cost the first "
        f"({side['model']}) throughput, at {side['concurrency']} callers | "
        + "; ".join(f"pass {n}: {a['pairs_per_s']:.2f} pairs/s alone, {b['pairs_per_s']:.2f} beside it"
                    for n, (a, b) in enumerate(passes, 1))
        + f" | `{side_path}` |",
        f"| `python -m bench.gateway_capacity` | one gateway core's capacity, Triton not the bottleneck | "
        f"{_range([l['pairs_per_gateway_cpu_s'] for l in levels])} pairs ({_range([l['requests_per_gateway_cpu_s'] for l in levels])} "
        f"requests of 10) per gateway CPU-second; sizing rule in [deployment.md](deployment.md#sizing-gateways-per-gpu) | "
        f"`{capacity_path}` |",
    ])


def queued_wait() -> str:
    """How long a request queued behind a busy Triton instance waits once it frees, per dynamic-batcher setting."""
    from bench.queued_wait import markdown

    result, path = _load("queued-wait")
    return (f"`python -m bench.queued_wait` (`{path}`; tiny model, one instance; the busy request {result['busy_rows']} rows of "
            f"{result['busy_tokens']} tokens, the queued one 1 row arriving {result['lag_ms']:.0f} ms later, nothing after it):\n\n"
            + markdown(result))


def big_message() -> str:
    """How long the largest request and its answer hold a gateway's event loop, in one go and a slice at a time."""
    from bench.big_message import markdown

    result, path = _load("big-message")
    return f"`python -m bench.big_message` (`{path}`). " + markdown(result)


def windows() -> str:
    """TRUNCATION_END against TRUNCATION_SPLIT on long pages."""
    found = results.newest("windows")
    result, path, machine = found.data, found.file, found.machine
    pages = result["page_chars"]
    rows = [
        f"`python -m bench.windows`: {result['documents_per_request']} Arabic pages of {pages['min']:,}-{pages['max']:,} "
        f"characters per request, {result['clients']} callers, `{result['model']}` model scoring at `--max-input-length "
        f"{result['max_input_length']}`, default windows ({machine['cpu']}, {machine['cores']} cores; "
        f"`{path}`):",
        "",
        "| truncation | documents/s | windows/s | tokens/s | windows per document | p50 | p99 |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, figures in result["modes"].items():
        rows.append(f"| `TRUNCATION_{mode.upper()}` | {figures['pairs_per_s']:.1f} | {figures['windows_per_s']:.1f} | "
                    f"{figures['tokens_per_s']:,} | {figures['windows_per_document']:.2f} | {figures['p50_ms']:,.0f} ms | "
                    f"{figures['p99_ms']:,.0f} ms |")
    return "\n".join(rows)


def llm_rerankers() -> str:
    """LLM rerankers beside cross-encoders: pairs/s and latency per model, in-process and served (bench/llm_rerankers.py)."""
    from bench.llm_rerankers import markdown

    found = results.newest("llm-rerankers")
    result, path, machine = found.data, found.file, found.machine
    first = next(iter(result["models"].values()))["workload"]
    tokens = first["document_tokens"]
    systems = "; ".join(f"`{name}`: {what}" for name, what in result["systems"].items())
    checks = [m["score_check"] for m in result["models"].values() if "score_check" in m]
    checked = (f" The service's scores equal the limit's within {checks[0]['atol']:g} on each served model's first "
               f"{checks[0]['requests']} requests (largest difference {max(c['max_abs_diff'] for c in checks):.2g})."
               if checks else "")
    return "\n".join([
        f"`{found.command}`: {systems}; one system after the other per model, on the same requests, "
        f"{first['docs_per_request']} documents per request ({tokens['min']}-{tokens['max']} tokens, median "
        f"{tokens['p50']:.0f}, in `{next(iter(result['models']))}`'s tokenizer), closed-loop callers "
        f"({machine['cpu']}, {machine['cores']} cores; `{path}`).{checked}",
        "",
        markdown(result),
    ])


def gateway_capacity() -> str:
    """The gateways-per-GPU sizing table: one gateway core's capacity per workload, against the tokenizer's own cost,
    and how a gateway of several workers scales."""
    result, path = _load("gateway-capacity")
    workers = result.get("gateway_workers", [1])
    workers = workers if isinstance(workers, list) else [workers]
    first = [l for l in result["gateway"] if l.get("workers", workers[0]) == workers[0]]
    cores = result["placement"]["gateway_core"].split(",")[0].split("-")[0]
    rows = [
        f"**Measured** (`{path}`), one gateway process pinned to one core (`taskset -c {cores}`), "
        f"the XLM-R tokenizer of ARA-Reranker-V1, closed loop at "
        f"{', '.join(str(l['concurrency']) for l in first if l['workload'] == 'mixed')} concurrent callers (each its own "
        "channel), Triton computing nothing (`--triton-model null`); the tokenizer alone measured in the same run on the "
        "same pairs (transformers' fast tokenizer, one thread):",
        "",
        "| workload | tokens / pair (mean) | pairs / s on one core | requests / s on one core | pairs per gateway CPU-second "
        "| tokenizer alone, pairs per CPU-second | gateway CPU / tokenizer CPU per pair | gateway CPU per request | gateway core busy |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    names = {"mixed": "the benchmark's mixed, 10 documents", "small": "small, 10 documents", "mixed-100": "mixed, 100 documents"}
    for name, summary in result["summary"].items():
        work = result["workloads"][name]
        levels = [l for l in first if l["workload"] == name]
        tokens = work["document_tokens"]
        floor = work.get("tokenizer_floor", {}).get("pairs_per_cpu_s")
        ratio = f"{floor / summary['pairs_per_gateway_cpu_s']:.2f}x" if floor else "n/a"
        rows.append(
            f"| {names.get(name, name)} ({tokens['min']}-{tokens['max']} tokens) | {work['pair_tokens']['mean']:.0f} | "
            f"{_range([l['pairs_per_s'] for l in levels])} | {_range([l['requests_per_s'] for l in levels])} | "
            f"**{summary['pairs_per_gateway_cpu_s']:,.0f}** | {'n/a' if not floor else f'{floor:,.0f}'} | "
            f"{ratio} | "
            f"{summary['gateway_cpu_ms_per_request']:.1f} ms | {_range([100 * l['gateway_core_busy'] for l in levels], unit=' %')} |"
        )
    scaling = result.get("scaling")
    if scaling:
        rows += ["", "The same gateway with `workers` = 1, 2, ... processes on as many cores (callers scaled alike):", "",
                 "| workers | workload | best pairs / s | pairs per gateway CPU-second |", "|---|---|---|---|"]
        for count, by_workload in scaling.items():
            for name, summary in by_workload.items():
                rows.append(f"| {count} | {names.get(name, name)} | {summary['best_pairs_per_s']:,.0f} | "
                            f"{summary['pairs_per_gateway_cpu_s']:,.0f} |")
    alone = result.get("triton_alone", [])
    if alone:
        rows += ["", f"Triton alone, sent the same requests pre-tokenized exactly as the gateway does, took "
                     f"{_range([l['pairs_per_s'] for l in alone])} pairs/s ({_range([l['requests_per_s'] for l in alone])} "
                     f"requests/s) with its CPU {_range([100 * l['triton_cpu_busy'] for l in alone], unit=' %')} busy."]
    return "\n".join(rows)


def workloads() -> str:
    """The other workloads (uniform ~128 / ~512-token passages, long pages): the service against the
    in-process limit and the best peer, measured in the same run."""
    rows = ["| workload | documents per request (tokens) | clients | in-process limit | best peer | service | service / limit "
            "| service / best peer | file |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    from bench.infinity import DEFAULT_BATCH_SIZE

    notes = []
    for name in ("mixed", "uniform-128", "uniform-512", "long"):
        try:
            run, path = _load(f"workload-{name}")
        except FileNotFoundError:
            rows.append(f"| {name} | not measured yet (`make bench`) | | | | | | | |")
            continue
        if (cap := _peer_read_less(run)) is not None:
            notes.append(f"- {name} (`{path}`): Infinity read at most {cap} tokens of a pair (its optimum export's "
                         "`max_position_embeddings`), the service and the limit the model's 8,192, so there it scored less "
                         "of each document: its pairs/s are not like for like.")
        for system in run["systems"]:
            if system["system"].startswith("infinity") and system.get("batch_size", DEFAULT_BATCH_SIZE) != DEFAULT_BATCH_SIZE:
                notes.append(f"- {name} (`{path}`): {system['system']} ran with `--batch-size {system['batch_size']}` "
                             f"(its default, {DEFAULT_BATCH_SIZE}, runs out of memory on these pairs).")
        tokens = run["workload"]["document_tokens"]
        limit = _levels(run, "limit-onnx")
        service = _levels(run, "service-onnx")
        peers = [s["system"] for s in run["systems"] if s["system"].startswith(("infinity", "sentence")) and s.get("levels")]
        for c in sorted(service):
            at_c = {p: level for p in peers if (level := _levels(run, p).get(c))}
            answered = [(p, level["pairs_per_s"]) for p, level in at_c.items() if level["requests"]]
            failed = [(p, level) for p, level in at_c.items() if not level["requests"]]
            best_name, best = max(answered, key=lambda t: t[1], default=("-", 0.0))
            peer_cell = f"{_rate(best)} ({best_name})" if answered else "-"
            for p, level in failed:
                peer_cell += f"; {p} failed"
                notes.append(f"- {name} at {c} clients (`{path}`): {p} answered none of its calls in the window "
                             f"({level['errors']} errors, the first `{level.get('first_error')}`).")
            own, lim = service[c]["pairs_per_s"], limit.get(c, {}).get("pairs_per_s", 0.0)
            rows.append(
                f"| {name} | {run['workload']['docs_per_request']} ({tokens['min']}-{tokens['max']}) | {c} | {_rate(lim)} | "
                f"{peer_cell} | **{_rate(own)}** | {own / lim:.2f} | {f'{own / best:.2f}' if best else '-'} | `{path}` |"
            )
    return "\n".join(rows) + ("\n\n" + "\n".join(notes) if notes else "")


def _rate(pairs_per_s: float) -> str:
    """Pairs/s with two significant digits below 1 (long pages), else one decimal."""
    return f"{pairs_per_s:.2f}" if pairs_per_s < 1 else f"{pairs_per_s:.1f}"


def _peer_read_less(run: dict) -> int | None:
    """The tokens of a pair Infinity's optimum engine read in ``run`` when its pairs could be longer (its
    pairs/s are then not like for like), else None. Runs that do not record it read 512."""
    from bench.infinity import OPTIMUM_MAX_TOKENS_BEFORE

    for system in run["systems"]:
        if system["system"] == "infinity-optimum" and system.get("levels"):
            cap = int(system.get("max_tokens", OPTIMUM_MAX_TOKENS_BEFORE))
            return cap if run["workload"]["document_tokens"]["max"] > cap - 32 else None  # 32: the query, special tokens
    return None


def http_overhead() -> str:
    """What the HTTP APIs cost over gRPC for the same request."""
    result, path = _load("http-overhead")
    rows = [f"`python -m bench.http_overhead`: one {result['documents']}-document request at a time, `{result['model']}` "
            f"model on {result['engine']}, {result['count']} calls per API interleaved (`{path}`):", ""]
    rows += table(["API", "p50 ms", "p99 ms", "p50 − gRPC"],
                  [(name, f"{f['p50_ms']:.2f}", f"{f['p99_ms']:.2f}", f"{f['p50_minus_grpc_ms']:+.2f} ms")
                   for name, f in result["apis"].items()], "lrrr")
    return "\n".join(rows)


def cache() -> str:
    """What the score cache buys: a repeated request, and a Zipf workload with and without it."""
    result, path = _load("cache")
    r, work = result["repeated_request"], result["workload"]
    rows = [f"`python -m bench.cache` (`{result['model']}` model, {result['engine']}; `{path}`): a repeated "
            f"{r['documents']}-document request took {r['repeat_ms']:,.0f} ms against {r['first_ms']:,.0f} ms the first time "
            f"(**{r['ratio']:.3f}x**). A workload with repetition ({work['queries']} queries and {work['corpus']:,} passages, "
            f"both Zipf-distributed with exponent {work['zipf_exponent']}, {work['docs_per_request']} passages per request, "
            f"{work['clients']} callers, {work['seconds']:.0f} s each):", ""]
    rows += table(["", "pairs/s", "p50 ms", "p99 ms", "pairs from the cache"],
                  [(label, f"{z['pairs_per_s']:.1f}", f"{z['p50_ms']:.0f}", f"{z['p99_ms']:.0f}", f"{z['hit_share']:.0%}")
                   for label, z in result["zipf"].items()], "lrrrr")
    return "\n".join(rows)


def intake() -> str:
    """Small callers beside one huge caller, each gateway configuration in the same run."""
    from bench import intake as measure

    result, path = _load("intake")
    return (f"`python -m bench.intake` (`{result['model']}` model at its 8,192-token context, {result['clients']} small "
            f"callers of 10 short documents, a fresh query each call; one caller repeating {result['documents']} pages of "
            f"{result['document_chars']:,} characters; {result['seconds']:.0f} s a phase; `{path}`):\n\n" + measure.markdown(result))


def default_price() -> str:
    """The fair CPU default against one instance and the in-process limit, the systems taking turns."""
    from bench import default_price as measure

    result, path = _load("default-price")
    return (f"`python -m bench.default_price` (`{result['model']}` model, {result['engine']}; one caller: the three up at "
            f"once, each request sent to all three in a shuffled order; several callers: {result['rounds']} rounds, each "
            f"system in a fresh process in turn, the order reversed every other round, windows of at least "
            f"{result['seconds']:.0f} s; `{path}`):\n\n" + measure.markdown(result))


def chaos() -> str:
    """Process faults under load, every call counted."""
    from bench import chaos as measure

    result, path = _load("chaos")
    return (f"`make chaos` (`python -m bench.chaos`: {result['callers']} callers with the client's default retry policy, "
            f"{result['after_s']:.0f} s of load after each fault, `{result['model']}` model; `{path}`):\n\n" + measure.markdown(result))


def overhead_figures(result: dict) -> tuple[float, float]:
    """The gateway's p50 over plain transformers' for the 10-document request and for one short document."""
    figures = result["overhead_p50_ms"]
    return figures[f"{result['docs']} documents over transformers"], figures["1 short document over transformers"]


def overhead() -> str:
    """Where a small request's time goes."""
    from bench import overhead as measure

    found = results.newest("overhead")
    result, path = found.data, found.file
    return f"`{found.command}` (`{result['model']}` model, {result['engine']}, {result['docs']} documents, " \
           f"{result['count']} calls per path interleaved; `{path}`):\n\n" + measure.markdown(result)


def tracing() -> str:
    """What OpenTelemetry tracing costs a call: the traced service against the untraced one, calls interleaved."""
    found = results.newest("tracing-overhead")
    result, path = found.data, found.file
    p50, p99, spans = result["p50_ms"], result["p99_ms"], result["tracing"]
    rows = [f"`{found.command}` (`{result['model']}` model, {result['engine']}, {result['count']} calls "
            f"per path interleaved; `{path}`):", "",
            "| call | untraced p50 / p99 ms | traced p50 / p99 ms | tracing costs (p50) |", "|---|---:|---:|---:|"]
    for label, name in ((f"{result['docs']} documents", "gateway"), ("1 short document", "gateway, 1 short document")):
        rows.append(f"| {label} | {p50[name]:.2f} / {p99[name]:.2f} | {p50[name + ', traced']:.2f} / "
                    f"{p99[name + ', traced']:.2f} | {p50[name + ', traced'] - p50[name]:+.2f} ms |")
    rows += ["", f"Spans received of the {spans['calls']:,} traced calls: {spans['spans_received']['gateway']:,} from the "
             f"gateway (six each), {spans['spans_received']['triton']:,} from Triton (three for each of the "
             f"{spans['triton_requests_traced']:,} requests it traced)."]
    return "\n".join(rows)


def precision() -> str:
    """Each low-precision option against float32, in ranking terms (docs/precision.md)."""
    from bench import precision as measure

    result, path = _load("precision")
    return measure.markdown(result) + f"\n\nFile: `{path}`."


def precision_brief() -> str:
    """The README's short form of the precision table."""
    result, path = _load("precision")
    rows = ["| option | top-10 agreement with fp32 | Kendall tau | mean abs logit error | score depends on the batch by |",
            "|---|---:|---:|---:|---:|"]
    rows += [f"| {r['option']} | {r['pool_top10_agreement']:.3f} | {r['pool_kendall_tau']:.3f} | {r['mean_abs_logit_error']:.3f} "
             f"| {r['batch_dependence']:.3f} |" for r in result["options"] if "skipped" not in r]
    return "\n".join(rows) + f"\n\n(`{path}`, `{result['meta']['model']}` model on CPU, random weights: agreement with float32 " \
        "measures numerical drift, not quality.)"


def headline() -> str:
    """The README's few performance lines, each from its committed result."""
    over, over_path = _load("overhead")
    http, http_path = _load("http-overhead")
    cached, cache_path = _load("cache")
    lines = []
    parts = []
    for name in ("mixed", "uniform-128", "uniform-512", "long"):
        try:
            run, _ = _load(f"workload-{name}")
        except FileNotFoundError:
            continue
        service, limit = _levels(run, "service-onnx").get(8), _levels(run, "limit-onnx").get(8)
        peer = _levels(run, "infinity-optimum").get(8)
        if service and limit:
            part = f"{name} {service['pairs_per_s'] / limit['pairs_per_s']:.2f}x the limit"
            if peer and not peer["requests"]:
                part += f", while Infinity failed ({peer['errors']} errors)"
            elif peer:
                part += f", {service['pairs_per_s'] / peer['pairs_per_s']:.2f}x Infinity"
                if (cap := _peer_read_less(run)) is not None:
                    part += f" (which read only the first {cap} tokens of these pairs)"
            parts.append(part)
    if parts:
        lines.append("- Throughput at 8 callers, `small` model on CPU ([benchmarks.md](docs/benchmarks.md#every-workload-side-by-side)): "
                     + "; ".join(parts) + ".")
    http_extra = max(f["p50_minus_grpc_ms"] for f in http["apis"].values())
    lines += [
        f"- Per-request overhead, `tiny` model: gateway p50 {over['p50_ms']['gateway']:.1f} ms for 10 documents against "
        f"{over['p50_ms']['transformers']:.1f} ms through transformers in-process (**{overhead_figures(over)[0]:.1f} ms** over), "
        f"{overhead_figures(over)[1]:.2f} ms over for one short document (`{over_path}`, "
        "[where it goes](docs/benchmarks.md#per-request-overhead))"
        + f"; the HTTP APIs add {http_extra:.1f} ms p50 over gRPC (`{http_path}`).",
        f"- Score cache: a repeated {cached['repeated_request']['documents']}-document request takes "
        f"{cached['repeated_request']['ratio']:.3f}x the first call's time; a Zipf-repeating workload runs "
        f"{cached['zipf_speedup']:.2f}x faster with it (`{cache_path}`).",
    ]
    return "\n".join(lines)


def reproduce() -> str:
    """The Reproduce table: every experiment (bench/results.py's EXPERIMENTS), what it writes, its newest result."""
    return results.reproduce_table()


SECTIONS: dict[str, Callable[[], str]] = {
    "reproduce": reproduce,
    "run-context": run_context,
    "run": run_table,
    "targets": targets,
    "other": other_measurements,
    "windows": windows,
    "llm-rerankers": llm_rerankers,
    "gateway-capacity": gateway_capacity,
    "workloads": workloads,
    "http-overhead": http_overhead,
    "cache": cache,
    "intake": intake,
    "default-price": default_price,
    "big-message": big_message,
    "queued-wait": queued_wait,
    "chaos": chaos,
    "overhead": overhead,
    "tracing": tracing,
    "precision": precision,
    "precision-brief": precision_brief,
    "headline": headline,
}


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        print(f"unknown sections {unknown}; known: {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    print("\n\n".join(SECTIONS[n]() for n in names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
