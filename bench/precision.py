"""What the low-precision options cost in ranking terms: ``python -m bench.precision`` (``make bench-precision``).

For one model (default ``small`` on CPU, ``large`` on a GPU) the evaluation set (client/data/arabic_sample.jsonl:
20 Arabic queries, 5 graded passages each) is scored in-process by the float32 reference (the torch engine in
float32 on the same device) and by each option (engine and dtype, as engines.py offers them), through the
service's own tokenization, batching and padding (bench.systems.InProcessLimit). Per option:

* logit error: the largest and the mean |logit - float32 logit| over every pair scored;
* agreement with the float32 ranking when each query ranks all 100 passages of the set (its own lists hold
  5, so a top-10 of them would be the whole list): top-10 agreement (|top-10 and float32's top-10 in
  common| / 10), top-1 agreement and Kendall's tau-b (scipy), each a mean over queries;
* on the labelled lists themselves: Kendall's tau, the share of queries ranked exactly as float32 ranks them,
  and the change of MRR, MAP and nDCG@10 (client.evaluation, the harness of ``make eval``) from float32's;
* batch dependence: the largest |logit in its micro-batch - logit of the pair alone| over the labelled
  pairs. The service promises a pair's score whatever it is batched with; float32 keeps that to rounding,
  int8 dynamic quantization does not (it scales activations per tensor, over the whole micro-batch).

The offline models have random weights, so their MRR, MAP and nDCG@10 mean nothing as quality. Agreement
with float32 on the same weights, tokens and batches is still a real measure of numerical drift: how far
rounding moves the logits and how often that reorders passages. Trained weights differ in one way that
matters: they have outlier activations, which per-tensor int8 quantization handles worse than random ones,
so measure the real model before serving int8.

Options are ``engine:dtype`` (``--options torch:bfloat16,onnx:int8``). float16 on a CPU is refused by the
engines (emulated, slower than float32); here ``torch:float16`` and ``onnx:float16`` on CPU run it all the
same, marked "CPU-emulated", as an estimate of GPU float16's drift until a GPU measures it.

Writes ``bench/results/precision-<timestamp>.json`` and prints a markdown table.
"""

from __future__ import annotations

import gc
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Option", "CPU_OPTIONS", "GPU_OPTIONS", "kendall_tau", "top_k_agreement", "measure", "markdown", "parse_options"]

CPU_OPTIONS = "onnx:float32,torch:bfloat16,onnx:int8,torch:float16"
GPU_OPTIONS = "torch:float16,torch:bfloat16,onnx:float16,onnx:float32"
REFERENCE = ("torch", "float32")
TOP_K = 10


@dataclass(frozen=True)
class Option:
    """One precision option: an engine of engines.py, a dtype it offers, its keyword options."""

    engine: str
    dtype: str
    options: tuple[tuple[str, object], ...] = ()
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or f"{self.engine} {self.dtype}"


def parse_options(text: str, device: str) -> list[Option]:
    """``engine:dtype,...`` into Options; float16 on a CPU is allowed here and labelled CPU-emulated."""
    options = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        engine, sep, dtype = item.partition(":")
        if not sep or not engine or not dtype:
            raise ValueError(f"option {item!r} is not engine:dtype (e.g. torch:bfloat16, onnx:int8)")
        if dtype in ("float16", "fp16") and not device.startswith("cuda"):
            options.append(Option(engine, dtype, (("allow_cpu_float16", True),), f"{engine} {dtype} (CPU-emulated)"))
        else:
            options.append(Option(engine, dtype))
    return options


def top_k_agreement(reference: np.ndarray, other: np.ndarray, k: int = TOP_K) -> float:
    """Share of the reference's top ``k`` that ``other`` also ranks in its top ``k`` (ties by lower index)."""
    from client.evaluation.metrics import rank_by_scores

    k = min(k, len(reference))
    return len(set(rank_by_scores(list(reference))[:k]) & set(rank_by_scores(list(other))[:k])) / k


def kendall_tau(reference: np.ndarray, other: np.ndarray) -> float:
    """Kendall's tau-b between two score lists (1: same order); 1.0 when both are constant (no order to lose)."""
    from scipy.stats import kendalltau

    tau = kendalltau(reference, other).statistic
    return 1.0 if np.isnan(tau) and np.ptp(reference) == 0 and np.ptp(other) == 0 else float(tau)


def _system(model_dir: Path, option: Option, device: str, parameters: dict[str, str]):
    """The in-process engine of ``option`` batching as the Triton config says; ONNX graphs exported first."""
    from bench.systems import InProcessLimit

    if option.engine == "onnx":
        from ara_reranker_model.engines import OnnxEngine
        from ara_reranker_model.onnx_export import export_onnx

        OnnxEngine.execution_providers(device)  # ValueError before a long export, not after it
        export_onnx(model_dir, dtype=option.dtype)
    on_gpu = device.startswith("cuda")
    return InProcessLimit(
        model_dir, option.engine, dtype=option.dtype, device=device, engine_options=dict(option.options),
        threads=0 if on_gpu else int(parameters.get("num_threads", "1")),
        workers=1 if on_gpu else int(parameters.get("forward_workers", "0")),
        max_batch_tokens=int(parameters.get("max_batch_tokens", "8192")),
        overhead_tokens=int(parameters.get("batch_overhead_tokens", "0")),
    )


def _score_pool(system, groups, pool: list[str]) -> np.ndarray:
    """Logits [queries, passages]: every query against every passage of the set."""
    return np.array([system.logits(group.query, pool) for group in groups], dtype=np.float32)


def _labelled(groups, pool_logits: np.ndarray, pool_index: dict[str, int], name: str):
    """The harness's report for the labelled lists, their logits read from the pool's (no second scoring)."""
    from client.evaluation.harness import evaluate

    rows = {group.query: i for i, group in enumerate(groups)}

    def ranker(query: str, documents) -> list[float]:
        return [float(pool_logits[rows[query], pool_index[d]]) for d in documents]

    return evaluate(groups, ranker, name=name, progress=False)


def _compare(reference: dict, candidate: dict) -> dict:
    """Drift of one option's scores and rankings from the reference's."""
    ref_pool, pool = reference["pool"], candidate["pool"]
    error = np.abs(pool.astype(np.float64) - ref_pool)
    ref_report, report = reference["report"], candidate["report"]
    labelled_tau = [kendall_tau(np.array(a.scores), np.array(b.scores)) for a, b in zip(ref_report.queries, report.queries)]
    identical = [a.ranking == b.ranking for a, b in zip(ref_report.queries, report.queries)]
    return {
        "max_abs_logit_error": round(float(error.max()), 5),
        "mean_abs_logit_error": round(float(error.mean()), 5),
        "pool_top10_agreement": round(float(np.mean([top_k_agreement(a, b) for a, b in zip(ref_pool, pool)])), 4),
        "pool_top1_agreement": round(float(np.mean([top_k_agreement(a, b, 1) for a, b in zip(ref_pool, pool)])), 4),
        "pool_kendall_tau": round(float(np.mean([kendall_tau(a, b) for a, b in zip(ref_pool, pool)])), 4),
        "labelled_kendall_tau": round(float(np.mean(labelled_tau)), 4),
        "labelled_identical_rankings": round(float(np.mean(identical)), 4),
        **_metrics(report),
        "delta_mrr": round(report.means.mrr - ref_report.means.mrr, 5),
        "delta_map": round(report.means.map - ref_report.means.map, 5),
        "delta_ndcg10": round(report.means.ndcg - ref_report.means.ndcg, 5),
        "batch_dependence": candidate["batch_dependence"],
    }


def _metrics(report) -> dict:
    return {"mrr": round(report.means.mrr, 5), "map": round(report.means.map, 5), "ndcg10": round(report.means.ndcg, 5)}


def _batch_dependence(system, groups, pool_logits: np.ndarray, pool_index: dict[str, int]) -> float:
    """Largest |logit scored among its query's 100 passages - logit scored alone| over the labelled pairs."""
    worst = 0.0
    for row, group in enumerate(groups):
        for document in group.documents:
            alone = system.logits(group.query, [document])[0]
            worst = max(worst, abs(alone - float(pool_logits[row, pool_index[document]])))
    return worst


def _run(model_dir: Path, option: Option, device: str, parameters: dict[str, str], groups, pool, pool_index) -> dict:
    """Score the pool with one option; its logits, the labelled report and its batch dependence."""
    started = time.perf_counter()
    system = _system(model_dir, option, device, parameters)
    try:
        logits = _score_pool(system, groups, pool)
        seconds = time.perf_counter() - started
        dependence = _batch_dependence(system, groups, logits, pool_index)
    finally:
        system.close()
        del system
        gc.collect()  # one model in memory at a time (the large one is 2.2 GB in float32)
    return {"pool": logits, "report": _labelled(groups, logits, pool_index, option.name),
            "batch_dependence": round(dependence, 5), "seconds": round(seconds, 1)}


def measure(model_dir: Path, device: str, options: list[Option], groups, parameters: dict[str, str]) -> dict:
    """Score ``groups`` (client.evaluation QueryGroups) with the float32 reference and each option on
    ``device``; the drift of each from the reference. An option this machine cannot run is reported as
    skipped with the reason, not raised."""
    pool = sorted({d for group in groups for d in group.documents})
    pool_index = {d: i for i, d in enumerate(pool)}
    reference_option = Option(*REFERENCE)
    print(f"precision: {reference_option.name} (reference) on {device}", file=sys.stderr, flush=True)
    reference = _run(model_dir, reference_option, device, parameters, groups, pool, pool_index)
    result = {
        "queries": len(groups), "pool_passages": len(pool), "pairs_per_option": len(groups) * len(pool),
        "reference": {"option": reference_option.name, **_metrics(reference["report"]), "seconds": reference["seconds"],
                      "logit_std": round(float(reference["pool"].std()), 4), "batch_dependence": reference["batch_dependence"]},
        "options": [],
    }
    for option in options:
        print(f"precision: {option.name} on {device}", file=sys.stderr, flush=True)
        row: dict = {"option": option.name, "engine": option.engine, "dtype": option.dtype}
        try:
            candidate = _run(model_dir, option, device, parameters, groups, pool, pool_index)
        except Exception as exc:  # cannot run here (no CUDA provider, no graph, out of memory): say why
            result["options"].append({**row, "skipped": f"{type(exc).__name__}: {exc}"[:500]})
            continue
        result["options"].append({**row, **_compare(reference, candidate), "seconds": candidate["seconds"]})
    return result


def markdown(result: dict) -> str:
    """The drift table, one row per option."""
    lines = [
        "| option | max abs logit error | mean abs logit error | top-10 agreement | top-1 agreement | Kendall tau (100 passages) "
        "| Kendall tau (labelled lists) | identical labelled rankings | delta MRR | delta MAP | delta nDCG@10 | batch dependence |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["options"]:
        if "skipped" in row:
            lines.append(f"| {row['option']} | skipped: {row['skipped'][:120]} |" + " |" * 10)
            continue
        lines.append(
            f"| {row['option']} | {row['max_abs_logit_error']:.4f} | {row['mean_abs_logit_error']:.4f} "
            f"| {row['pool_top10_agreement']:.3f} | {row['pool_top1_agreement']:.2f} | {row['pool_kendall_tau']:.4f} "
            f"| {row['labelled_kendall_tau']:.3f} | {row['labelled_identical_rankings']:.2f} "
            f"| {row['delta_mrr']:+.4f} | {row['delta_map']:+.4f} | {row['delta_ndcg10']:+.4f} | {row['batch_dependence']:.4f} |"
        )
    ref = result["reference"]
    lines.append("")
    lines.append(f"Reference {ref['option']}: MRR {ref['mrr']:.4f}, MAP {ref['map']:.4f}, nDCG@10 {ref['ndcg10']:.4f} "
                 f"(random weights: meaningless as quality); logits' standard deviation {ref['logit_std']:.3f}; "
                 f"its own batch dependence {ref['batch_dependence']:.2g}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from ara_reranker_model.store import prepare
    from bench import results
    from bench.worker import config_parameters
    from client.evaluation import SAMPLE_DATA, load_dataset

    parser = results.parser(__doc__)
    parser.add_argument("--model", default=None, help="offline model or directory (default: small on CPU, large on GPU)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--options", default=None, help=f"engine:dtype,... (default CPU {CPU_OPTIONS}; GPU {GPU_OPTIONS})")
    parser.add_argument("--data", type=Path, default=SAMPLE_DATA, help="labelled query/document/label rows")
    args = parser.parse_args(argv)
    on_gpu = args.device.startswith("cuda")
    model = args.model or ("large" if on_gpu else "small")
    try:
        options = parse_options(args.options or (GPU_OPTIONS if on_gpu else CPU_OPTIONS), args.device)
    except ValueError as exc:
        parser.error(str(exc))
    model_dir = prepare(model)
    groups = load_dataset(args.data)
    parameters = config_parameters("gpu" if on_gpu else "cpu")
    result = {
        "meta": {"model": model, "model_dir": str(model_dir), "device": args.device, "data": str(args.data),
                 "model_note": "offline: random weights (rankings mean nothing as quality; agreement with float32 is "
                               "numerical drift)" if (model_dir / "OFFLINE_RANDOM_WEIGHTS.txt").exists() else "real weights",
                 },
        **measure(model_dir, args.device, options, groups, parameters),
    }
    results.finish("precision", "bench.precision", argv, args, result, markdown,
                   machine=results.machine_info() | _gpu(args.device))
    return 0


def _gpu(device: str) -> dict:
    """The GPU's name, where the device is one."""
    if not device.startswith("cuda"):
        return {}
    import torch

    return {"gpu": torch.cuda.get_device_name(torch.device(device))}


if __name__ == "__main__":
    sys.exit(main())
