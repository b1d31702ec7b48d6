"""Every benchmark result is in the one format (bench/results.py), and the committed ones stay readable: the docs'
figures and the Reproduce table are generated from them."""

from __future__ import annotations

import json

import pytest

from bench import results

pytestmark = pytest.mark.unit  # starts no process: make test-unit

COMMITTED = sorted(results.RESULTS.glob("*.json"))


def test_every_committed_result_reads_and_belongs_to_an_experiment():
    kinds = [e.kind for e in results.EXPERIMENTS]
    prefixes = [k.split("<name>")[0] for k in kinds if "<name>" in k]
    assert COMMITTED
    for path in COMMITTED:
        found = results.read(path)
        assert found.kind in kinds or found.kind.startswith(tuple(prefixes)), f"{path.name}: kind {found.kind!r} not in EXPERIMENTS"
        assert found.data and {"cpu", "cores"} <= found.machine.keys(), path.name


def test_a_written_result_reads_back_with_its_command_commit_and_machine(tmp_path):
    path = results.write("cache", "python -m bench.cache --seconds 2", {"zipf_speedup": 1.5}, tmp_path)
    found = results.newest("cache", tmp_path)
    assert found.path == path and found.kind == "cache" and found.data == {"zipf_speedup": 1.5}
    assert found.command == "python -m bench.cache --seconds 2"
    assert found.commit == results.git_commit() and found.machine["cores"] > 0 and "versions" in found.machine


def test_newest_does_not_take_another_kind_that_shares_the_prefix(tmp_path):
    results.write("overhead", "python -m bench.overhead", {"which": "plain"}, tmp_path)
    (tmp_path / "overhead-extra-20991231-235959.json").write_text(
        json.dumps({"kind": "overhead-extra", "command": None, "commit": None, "machine": {}, "data": {"which": "other"}}))
    assert results.newest("overhead", tmp_path).data == {"which": "plain"}


def test_a_file_outside_the_format_is_refused_by_name(tmp_path):
    path = tmp_path / "cache-20260101-000000.json"
    path.write_text(json.dumps({"zipf_speedup": 1.5}))
    with pytest.raises(ValueError, match="not a result"):
        results.read(path)


def test_the_reproduce_table_names_every_experiment_and_its_newest_result():
    table = results.reproduce_table()
    for experiment in results.EXPERIMENTS:
        assert f"| `{experiment.command.replace('|', chr(92) + '|')}`" in table
    assert f"`{results.newest('overhead').file}`: `{results.newest('overhead').command}`" in table
