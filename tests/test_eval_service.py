"""The evaluation through the real service (a gateway in front of the session tritonserver serving the
offline tiny model) gives the same rankings and metrics as the in-process reference model.

The tiny model has random weights: its metrics on the sample set mean nothing about quality, but every
score and ranking is computed exactly as with the production model, so equality here is real."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ara_reranker_client import RerankerClient
from ara_reranker_server.launcher.triton_launcher import free_port
from client.evaluation import SAMPLE_DATA, LocalRanker, ServiceRanker, evaluate, load_dataset
from client.evaluation.__main__ import main


@pytest.fixture(scope="module")
def sample():
    return load_dataset(SAMPLE_DATA)


@pytest.fixture(scope="module")
def local_ranker(tiny_model_dir):
    return LocalRanker(tiny_model_dir)


@pytest.fixture(scope="module")
def reference_report(sample, local_ranker):
    return evaluate(sample, local_ranker, name="reference", progress=False)


class RecordingClient:
    """The real client, remembering the order each Rerank call returned (one call per query)."""

    def __init__(self, client: RerankerClient) -> None:
        self.client = client
        self.returned: dict[str, tuple[int, ...]] = {}

    def rerank(self, query, documents, model=None):
        results = self.client.rerank(query, documents, model=model)
        self.returned[query] = tuple(r.index for r in results)
        return results


@pytest.fixture(scope="module")
def service_run(gateway, sample):
    with RerankerClient(gateway.target) as client:
        recorder = RecordingClient(client)
        report = evaluate(sample, ServiceRanker(recorder), name="service", concurrency=4, progress=False)
    return report, recorder.returned


def test_service_gives_the_reference_rankings_and_metrics(service_run, reference_report):
    service, _ = service_run
    gaps = [np.diff(np.sort(q.scores)).min() for q in reference_report.queries]
    # Scores agree to float32 rounding (~1e-6) and no two passages of a query are that close, so a
    # difference in ranking would be a real bug, not rounding.
    assert min(gaps) > 1e-4
    for ours, ref in zip(service.queries, reference_report.queries):
        np.testing.assert_allclose(ours.scores, ref.scores, atol=1e-5, rtol=0)
        assert ours.ranking == ref.ranking, ours.query
    assert service.means.queries == reference_report.means.queries == 20
    assert service.means.mrr == pytest.approx(reference_report.means.mrr, abs=1e-9)
    assert service.means.map == pytest.approx(reference_report.means.map, abs=1e-9)
    assert service.means.ndcg == pytest.approx(reference_report.means.ndcg, abs=1e-9)


def test_harness_evaluates_the_ranking_the_service_returns(service_run):
    report, returned = service_run
    assert len(returned) == 20
    for result in report.queries:
        assert result.ranking == returned[result.query]


def test_cli_compares_the_service_and_the_reference_in_one_table(gateway, tiny_model_dir, tmp_path, capsys):
    with RerankerClient(gateway.target) as client:
        model_id = client.info().model_id
    # The first 5 queries of the sample keep this plumbing test short; the whole set is compared above.
    data = tmp_path / "first5.jsonl"
    data.write_text("".join(SAMPLE_DATA.read_text(encoding="utf-8").splitlines(keepends=True)[:25]), encoding="utf-8")
    targets = f"{gateway.target},reference=local:{tiny_model_dir}"
    assert main([str(data), "--targets", targets, "--output-dir", str(tmp_path), "--no-progress"]) == 0

    table = capsys.readouterr().out.splitlines()
    assert table[0] == "| model | MRR | MAP | nDCG@10 |"
    service_row, reference_row = table[2], table[3]
    assert service_row.startswith(f"| {model_id} |") and reference_row.startswith("| reference |")
    assert service_row.split("|")[2:] == reference_row.split("|")[2:]  # same numbers

    written = json.loads((tmp_path / "first5.json").read_text(encoding="utf-8"))
    assert written["dataset"]["rows"] == 25 and written["dataset"]["labels"] == "graded"
    service, reference = written["models"]
    assert service["target"] == gateway.target and reference["target"] == f"local:{tiny_model_dir}"
    for metric in ("mrr", "map", "ndcg@10"):
        assert service[metric] == pytest.approx(reference[metric], abs=1e-9)
    assert (tmp_path / "first5.md").read_text(encoding="utf-8").startswith("| model | MRR | MAP | nDCG@10 |\n")


def test_an_unreachable_gateway_is_a_clear_error(capsys):
    target = f"127.0.0.1:{free_port()}"
    assert main([str(SAMPLE_DATA), "--targets", target, "--no-progress"]) == 1
    assert f"cannot open target {target!r}" in capsys.readouterr().err


def test_a_missing_local_model_is_a_clear_error(tmp_path, capsys):
    assert main([str(SAMPLE_DATA), "--targets", f"local:{tmp_path / 'absent'}", "--no-progress"]) == 1
    assert "no model directory" in capsys.readouterr().err
