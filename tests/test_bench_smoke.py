"""The benchmark keeps working: its seconds-long smoke (tiny model) runs every system end to end.

The figures of a smoke mean nothing (tiny model with random weights, one-second windows); what is
asserted is what users of ``make bench`` rely on: a JSON, a markdown table and a PNG plot come out, and
each holds every system that ran, with figures for every concurrency level and no failed calls.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench import results
from bench.run import SMOKE_SYSTEMS

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, tiny_model_dir) -> Path:
    out = tmp_path_factory.mktemp("bench")
    result = subprocess.run([sys.executable, "-m", "bench.run", "--smoke", "--out-dir", str(out)], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


def test_smoke_writes_json_table_and_plot(smoke):
    stamps = {p.stem for p in smoke.glob("*.json")} - {"latest"}
    assert len(stamps) == 1
    stamp = stamps.pop()
    for ext in ("json", "md", "png"):
        assert (smoke / f"{stamp}.{ext}").stat().st_size > 0
        assert (smoke / f"latest.{ext}").read_bytes() == (smoke / f"{stamp}.{ext}").read_bytes()
    assert (smoke / f"{stamp}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_system_that_ran_is_in_every_output(smoke):
    found = results.read(smoke / "latest.json")
    assert found.kind == "run" and found.command == "python -m bench.run --smoke --out-dir " + str(smoke)
    assert found.commit and found.machine["cores"] > 0
    run = found.data
    table = (smoke / "latest.md").read_text()
    names = [s["system"] for s in run["systems"]]
    assert names == list(SMOKE_SYSTEMS)
    for system in run["systems"]:
        assert "error" not in system, system
        assert [level["concurrency"] for level in system["levels"]] == run["meta"]["concurrency"]
        for level in system["levels"]:
            assert level["errors"] == 0 and level["requests"] > 0 and level["pairs_per_s"] > 0
            assert 0 < level["p50_ms"] <= level["p95_ms"] <= level["p99_ms"]
        assert system["peak_rss_mib"] > 0
        assert f"| {system['system']} |" in table


def test_service_reports_padding_and_triton_batches(smoke):
    run = results.read(smoke / "latest.json").data
    service = next(s for s in run["systems"] if s["system"].startswith("service-"))
    for level in service["levels"]:
        assert 0 < level["padding_ratio"] <= 1
        assert level["triton_batch_rows"] >= 1
    overhead = run["overhead"]
    assert overhead["in_process_p50_ms"] > 0 and overhead["service_p50_ms"] > 0
    assert set(run["targets"]) >= {"saturation_vs_limit", "ahead_of_peers", "padding_ratio", "overhead_p50"}


def test_http_overhead_measures_every_api_against_grpc(tiny_model_dir):
    """``make bench``'s HTTP-vs-gRPC measurement runs end to end (a handful of calls; figures meaningless)."""
    result = subprocess.run([sys.executable, "-m", "bench.http_overhead", "--count", "5", "--no-write"], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and "ms" not in line]
    assert [row.split("|")[1].strip() for row in rows] == ["grpc reranker.v1", "http TEI /rerank", "http Cohere /v1/rerank"]
    assert rows[0].split("|")[4].strip() == "+0.00"


def test_overhead_takes_the_gateway_call_apart(tiny_model_dir):
    """``make bench``'s overhead measurement runs end to end: every path, the floors and the breakdown (a
    handful of calls; figures meaningless)."""
    result = subprocess.run([sys.executable, "-m", "bench.overhead", "--count", "5", "--no-write"], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = {line.split("|")[1].strip() for line in result.stdout.splitlines() if line.startswith("| ")}
    assert {"transformers", "in-process", "triton", "gateway", "transformers, 1 short document",
            "an empty gRPC call to the gateway", "tokenization", "compute infer (model.py execute)",
            "10 documents over transformers", "1 short document over transformers", "relay, 1 short document",
            "the gateway's own work (the gateway over the relay)"} <= rows


def test_profile_tables_count_own_and_inclusive_time_per_function():
    """bench.profile's reading of py-spy's collapsed stacks (``thread;frame;...;frame count``): a function's own time is
    the samples where it is the innermost frame, its inclusive time those where it appears at all (once per stack,
    recursion included), as shares of all samples. (Sampling a live stack takes a minute: ``python -m bench.profile``.)"""
    from bench.profile import summarize

    stacks = "\n".join([
        "MainThread;run (base_events.py:600);rerank (reranking.py:100);encode (tokenization.py:80) 6",
        "MainThread;run (base_events.py:600);rerank (reranking.py:120) 2",
        "forward_0;work (batching.py:10);forward (engines.py:5);forward (engines.py:7) 2",
    ])
    profile = summarize(stacks)
    own, inclusive = dict(profile["own_percent"]), dict(profile["inclusive_percent"])
    assert profile["samples"] == 10
    assert own == {"encode (tokenization.py)": 60.0, "rerank (reranking.py)": 20.0, "forward (engines.py)": 20.0}
    assert inclusive["run (base_events.py)"] == 80.0 and inclusive["rerank (reranking.py)"] == 80.0
    assert inclusive["forward (engines.py)"] == 20.0  # two frames of one function in one stack count once
    assert "MainThread" not in inclusive and "forward_0" not in inclusive  # thread names are not functions


def test_big_message_benchmark_reads_a_request_at_the_bound_through_both_apis():
    """``python -m bench.big_message`` builds a request at the default max_message_bytes and times both APIs' reading and
    writing, in one go and a slice at a time."""
    result = subprocess.run([sys.executable, "-m", "bench.big_message", "--repeat", "1", "--no-write"], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith(("| reranker.v1", "| Cohere v2"))]
    assert len(rows) == 4 and all(float(cell) > 0 for row in rows for cell in row.strip(" |").split("|")[1:]), result.stdout


def test_cache_benchmark_runs_both_parts(tiny_model_dir):
    """``make bench``'s cache measurement runs end to end (tiny model, seconds; figures meaningless)."""
    result = subprocess.run([sys.executable, "-m", "bench.cache", "--model", "tiny", "--repeat-docs", "40", "--corpus", "60",
                             "--requests", "30", "--docs", "5", "--seconds", "2", "--clients", "2", "--no-write"],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Repeated 40-document request" in result.stdout
    rows = {line.split("|")[1].strip(): line for line in result.stdout.splitlines() if line.startswith("| cache")}
    assert set(rows) == {"cache off", "cache on"} and rows["cache off"].rstrip(" |").endswith("0.0%")


# ------------------------------------------------------------------------------- precision and GPU scripts
def _run_module(module: str, args: list[str], timeout_s: int = 300) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout_s)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _only_result(directory: Path, kind: str) -> dict:
    """The figures of the one result of ``kind`` in ``directory``, checked to carry the format's envelope."""
    (path,) = directory.glob(f"{kind}-*.json")
    found = results.read(path)
    assert found.kind == kind and found.command.startswith("python -m bench.") and found.commit and found.machine["cores"] > 0
    return found.data


def test_precision_bench_reports_drift_in_ranking_terms(tmp_path, tiny_model_dir):
    # One option, the one with the most drift: its figures are in range and its table row is printed.
    printed = _run_module("bench.precision", ["--model", "tiny", "--options", "onnx:int8", "--out-dir", str(tmp_path)]).stdout
    result = _only_result(tmp_path, "precision")
    (row,) = result["options"]
    assert row["option"] == "onnx int8" and "skipped" not in row
    assert result["queries"] == 20 and result["pool_passages"] == 100
    assert 0 < row["mean_abs_logit_error"] <= row["max_abs_logit_error"]
    for key in ("pool_top10_agreement", "pool_top1_agreement", "labelled_identical_rankings"):
        assert 0 <= row[key] <= 1
    assert -1 <= row["pool_kendall_tau"] < 1 and row["batch_dependence"] > 0  # int8 scales activations per batch
    assert result["reference"]["batch_dependence"] < 1e-3
    assert "| onnx int8 |" in printed and "random weights" in result["meta"]["model_note"]


def test_gpu_script_dry_run_runs_every_step_on_cpu(tmp_path, tiny_model_dir):
    # The GPU script's one-command path, shortened: every step runs (none skipped) and proposes config values.
    args = ["--dry-run", "--concurrency", "2", "--seconds", "0.5", "--queue-delays", "100", "--widths", "64",
            "--budgets", "8192", "--requests", "4", "--drift-options", "torch:float16", "--huge", "6,2000",
            "--out-dir", str(tmp_path), "--copy-to", str(tmp_path / "copy")]
    printed = _run_module("bench.gpu", args, timeout_s=420).stdout
    result = _only_result(tmp_path, "gpu-dryrun-cpu")
    steps = result["steps"]
    assert result["meta"]["dry_run"] and "not GPU figures" in result["meta"]["note"]
    assert [name for name, step in steps.items() if "skipped" in step] == []
    assert set(steps) == {"environment", "model", "onnx_export", "drift", "batch_shapes", "in_process", "triton", "fairness"}
    assert steps["drift"]["options"][0]["option"] == "torch float16 (CPU-emulated)"
    assert set(steps["in_process"]["systems"]) == {"torch-fp16", "onnx-fp16"}
    runs = [*steps["in_process"]["systems"].values(), steps["triton"]["by_queue_delay_us"]["100"]]
    for run in runs:
        assert [level["concurrency"] for level in run["levels"]] == [2]
        assert all(level["pairs_per_s"] > 0 and level["errors"] == 0 for level in run["levels"])
    fairness = steps["fairness"]["by_instances"]
    assert set(fairness) == {"1", "2"} and steps["fairness"]["huge_request"] == {"documents": 6, "characters": 2000}
    for row in fairness.values():  # each phase measured: small calls alone and beside the huge caller, which completed
        assert row["phases"]["alone"]["calls"] > 0 and row["workload_pairs_per_s"] > 0 and row["huge_alone_pairs_per_s"] > 0
        assert all(row["p99_over_alone"][p] > 0 for p in ("interactive", "batch"))
    proposed = result["proposed"]
    assert proposed.get("instance_group_count") == steps["fairness"]["proposed_instances"]
    assert "## Small calls beside a huge one" in printed
    assert proposed["max_batch_tokens"] == 8192 and proposed["max_queue_delay_microseconds"] == 100
    assert isinstance(proposed["batch_overhead_tokens"], int)
    assert "CPU DRY RUN" in printed
    assert sorted(p.suffix for p in (tmp_path / "copy").iterdir()) == [".json", ".md"]


def test_llm_rerankers_bench_measures_each_family_in_process_and_served(tmp_path, tiny_model_dir):
    # Each family through the Triton model's scorer, a Qwen3-Reranker fed its recipe's whole prompts; the LLM also
    # through the gateway and tritonserver, on the same requests, scoring as the in-process limit does.
    args = ["--models", "tiny,qwen3-tiny", "--limit-only", "tiny", "--concurrency", "1", "--duration", "1",
            "--requests", "4", "--out-dir", str(tmp_path)]
    printed = _run_module("bench.llm_rerankers", args).stdout
    assert "| `tiny` | cross-encoder | 2 x 64 | limit-torch | 1 |" in printed
    assert "| `qwen3-tiny` | qwen3-reranker | 2 x 64 | limit-torch | 1 |" in printed
    assert "| `qwen3-tiny` | qwen3-reranker | 2 x 64 | service-torch | 1 |" in printed
    models = _only_result(tmp_path, "llm-rerankers")["models"]
    assert [level["system"] for level in models["tiny"]["levels"]] == ["limit-torch"] and "score_check" not in models["tiny"]
    limit, served = models["qwen3-tiny"]["levels"]
    assert (limit["system"], served["system"]) == ("limit-torch", "service-torch")
    assert all(level["errors"] == 0 and level["pairs_per_s"] > 0 for level in (limit, served))
    assert served["tokens_per_pair"] == pytest.approx(limit["tokens_per_pair"], rel=0.05)  # the same prompts
    check = models["qwen3-tiny"]["score_check"]
    assert check["requests"] == 4 and 0 <= check["max_abs_diff"] <= check["atol"] == 1e-4
