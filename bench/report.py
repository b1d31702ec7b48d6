"""Turn one benchmark run into a markdown table, a PNG plot and the targets' verdicts.

``targets`` and ``results_table`` take the run's figures (a result's ``data``); ``markdown`` and ``plot`` the
whole result (bench/results.py), since they also say which machine and command measured it."""

from __future__ import annotations

from pathlib import Path

__all__ = ["markdown", "results_table", "plot", "targets"]

STYLE = {  # one colour per family of system; dashed = in-process
    "limit": ("#444444", "--"), "sentence-transformers": ("#9467bd", ":"), "infinity": ("#ff7f0e", "-."),
    "service": ("#1f77b4", "-"),
}


def _ok(system: dict) -> bool:
    return "error" not in system and bool(system.get("levels"))


def _family(name: str) -> str:
    return next((f for f in STYLE if name.startswith(f)), "limit")


def targets(run: dict) -> dict:
    """The issue's targets, each with the figures it was judged on (True/False, or None when not run)."""
    systems = {s["system"]: s for s in run["systems"] if _ok(s)}
    service = {n: s for n, s in systems.items() if n.startswith("service-")}
    limits = {n: s for n, s in systems.items() if n.startswith("limit-") and "bf16" not in n}
    peers = {n: s for n, s in systems.items() if n.startswith(("sentence-transformers", "infinity-"))}
    best = lambda group: max(((max(l["pairs_per_s"] for l in s["levels"]), n) for n, s in group.items()), default=None)  # noqa: E731
    out: dict = {}
    if service and limits:
        (svc_rate, svc_name), (lim_rate, lim_name) = best(service), best(limits)
        out["saturation_vs_limit"] = {
            "ok": svc_rate >= 0.9 * lim_rate, "service": svc_name, "service_pairs_per_s": round(svc_rate, 2),
            "limit": lim_name, "limit_pairs_per_s": round(lim_rate, 2), "ratio": round(svc_rate / lim_rate, 3),
        }
    if service and peers:
        svc_name = best(service)[1]
        by_c = {l["concurrency"]: l for l in service[svc_name]["levels"]}
        misses = []
        for peer, data in peers.items():
            for level in data["levels"]:
                mine = by_c.get(level["concurrency"])
                if mine is None:
                    continue
                if mine["pairs_per_s"] <= level["pairs_per_s"]:
                    misses.append(f"c={level['concurrency']}: {peer} {level['pairs_per_s']:.1f} >= {mine['pairs_per_s']:.1f} pairs/s")
                if mine["p99_ms"] >= level["p99_ms"]:
                    misses.append(f"c={level['concurrency']}: {peer} p99 {level['p99_ms']:.0f} <= {mine['p99_ms']:.0f} ms")
        out["ahead_of_peers"] = {"ok": not misses, "service": svc_name, "peers": sorted(peers), "misses": misses}
    if service:
        ratios = [l["padding_ratio"] for s in service.values() for l in s["levels"] if "padding_ratio" in l]
        if ratios:
            out["padding_ratio"] = {"ok": min(ratios) >= 0.9, "min": min(ratios), "max": max(ratios)}
    overhead = run.get("overhead")
    if overhead and "p50_overhead_ms" in overhead:
        out["overhead_p50"] = {"ok": overhead["p50_overhead_ms"] <= 5.0, "ms": overhead["p50_overhead_ms"]}
    return out


def markdown(result: dict) -> str:
    """The results table (one row per system and concurrency) with the run's context and verdicts."""
    run, machine = result["data"], result["machine"]
    meta, work = run["meta"], run["workload"]
    tokens = work["document_tokens"]
    lines = [
        f"Model `{meta['model']}` ({meta['model_note']}), max length {meta['max_length']}; "
        f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB; {meta['timestamp']}.",
        f"Workload: {work['requests']} Arabic queries x {work['docs_per_request']} documents of {tokens['min']}-{tokens['max']} "
        f"tokens (median {tokens['p50']:.0f}, mean {tokens['mean']:.0f}), seed {work['seed']}; closed loop, "
        f"measured over a window of {meta['duration_s']:.0f} s (or three ramps, up to 60 s) per level after a ramp. "
        f"Command: `{result['command']}`.",
        "",
        results_table(run),
    ]
    overhead = run.get("overhead")
    if overhead:
        lines += ["", f"Overhead (model `{overhead['model']}`, one request of {overhead['docs']} documents at a time, "
                      f"{overhead['count']} calls): in-process {overhead.get('in_process_p50_ms', float('nan')):.2f} ms p50, "
                      f"service {overhead.get('service_p50_ms', float('nan')):.2f} ms p50 -> "
                      f"**{overhead.get('p50_overhead_ms', float('nan')):.2f} ms** gateway + Triton overhead."]
    verdicts = targets(run)
    if verdicts:
        lines += ["", "Targets:"]
        for name, v in verdicts.items():
            figures = ", ".join(f"{k}={v[k]}" for k in v if k not in ("ok", "misses"))
            misses = "; ".join(v.get("misses", [])[:6])
            lines.append(f"- {name}: {'met' if v['ok'] else 'MISSED'} ({figures}{'; ' + misses if misses else ''})")
    return "\n".join(lines) + "\n"


def results_table(run: dict) -> str:
    """One row per system and concurrency: throughput, latency, memory, padding and Triton's batches."""
    lines = [
        "| system | clients | pairs/s | req/s | p50 ms | p95 ms | p99 ms | peak RSS MiB | padding ratio | Triton batch: rows / requests |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for system in run["systems"]:
        if not _ok(system):
            lines.append(f"| {system['system']} | - | failed: {system.get('error', 'no levels')[:120]} | | | | | | | |")
            continue
        for level in system["levels"]:
            err = f" ({level['errors']} errors)" if level["errors"] else ""
            lines.append(
                f"| {system['system']} | {level['concurrency']} | {level['pairs_per_s']:.1f}{err} | {level['requests_per_s']:.2f} | "
                f"{level['p50_ms']:.0f} | {level['p95_ms']:.0f} | {level['p99_ms']:.0f} | {system['peak_rss_mib']:.0f} | "
                f"{level.get('padding_ratio', '')} | {_batch(level)} |"
            )
    return "\n".join(lines)


def _batch(level: dict) -> str:
    if "triton_batch_rows" not in level:
        return ""
    return f"{level['triton_batch_rows']:.1f} / {level['triton_batch_requests']:.1f}"


def plot(result: dict, path: Path) -> None:
    """Throughput and p99 latency against client concurrency, one line per system."""
    run, machine = result["data"], result["machine"]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for system in run["systems"]:
        if not _ok(system):
            continue
        c = [l["concurrency"] for l in system["levels"]]
        colour, style = STYLE[_family(system["system"])]
        shade = 0.55 if system["system"].endswith(("torch", "torch-bf16")) and not system["system"].startswith("service") else 1.0
        kwargs = dict(label=system["system"], color=colour, linestyle=style, marker="o", alpha=shade)
        left.plot(c, [l["pairs_per_s"] for l in system["levels"]], **kwargs)
        right.plot(c, [l["p99_ms"] / 1000 for l in system["levels"]], **kwargs)
    for ax, title, unit in ((left, "Throughput", "pairs / s"), (right, "p99 latency", "seconds")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({l["concurrency"] for s in run["systems"] if _ok(s) for l in s["levels"]}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    left.set_ylim(bottom=0)
    right.set_yscale("log")
    left.legend(fontsize=8)
    fig.suptitle(f"{run['meta']['model']} model, {machine['cpu']} ({machine['cores']} cores)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

