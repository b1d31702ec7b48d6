"""bench.default_price keeps working (its own module, so that a test worker runs it beside test_bench_smoke): every
round measures each of the three systems at every level in its own process, and the result holds the medians and
ratios the docs quote. The figures of a seconds-long run on the tiny model mean nothing."""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

from bench import results

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def test_default_price_measures_each_system_every_round_and_writes_the_ratios(tmp_path, tiny_model_dir):
    command = [sys.executable, "-m", "bench.default_price", "--model", "tiny", "--engine", "torch", "--workloads", "mixed",
               "--concurrency", "1,2", "--calls", "4", "--rounds", "2", "--seconds", "0.5", "--warmup", "0.3", "--requests", "8",
               "--out-dir", str(tmp_path)]
    run = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=420)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (path,) = tmp_path.glob("default-price-*.json")
    found = results.read(path)
    assert found.kind == "default-price" and found.command.startswith("python -m bench.default_price")
    mixed = found.data["workloads"]["mixed"]
    # Several callers: every system measured in every round, its own process each time.
    for system in ("limit", "service", "service-1-instance"):
        assert len(mixed["pairs_per_s"][system]["2"]) == 2 and all(v > 0 for v in mixed["pairs_per_s"][system]["2"])
    level = mixed["levels"]["2"]
    m = level["median_pairs_per_s"]
    assert m == {name: statistics.median(mixed["pairs_per_s"][name]["2"]) for name in m}
    assert abs(level["service_over_limit"] - m["service"] / m["limit"]) < 0.01
    assert abs(level["price_of_the_default"] - (1 - m["service"] / m["service-1-instance"])) < 0.01
    # One caller: the three side by side, the same requests to each.
    one = mixed["levels"]["1"]
    assert one["method"] == "side by side, 4 requests to each" and all(v > 0 for v in one["median_pairs_per_s"].values())
    assert 0 < one["service_over_limit"] and 0 < one["one_instance_over_limit"] and one["price_of_the_default"] < 1
    # Each service ran the instances it is named for, in every round and side by side (Triton's stub processes).
    assert mixed["model_instances"] == {"service": [2, 2], "service-1-instance": [1, 1]}
    assert one["model_instances"] == {"service": 2, "service-1-instance": 1}
    assert "price of the default" in run.stdout and "| mixed | 1 | side by side" in run.stdout
