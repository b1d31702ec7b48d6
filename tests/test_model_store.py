"""The model store (ara_reranker_model.store) prepared from several processes at once: test workers and two
launchers on one node build or download into the same models/ directory."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from ara_reranker_model.store import prepare


def _prepare_tiny(root: str) -> str:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    target = prepare("tiny", root=Path(root))
    # Usable when prepare returns, whoever built it: the weights and the tokenizer load.
    AutoModelForSequenceClassification.from_pretrained(target)
    AutoTokenizer.from_pretrained(target)
    return str(target)


def test_processes_preparing_one_model_at_once_all_get_it_whole(tmp_path):
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        targets = pool.map(_prepare_tiny, [str(tmp_path)] * 3)
    assert len(set(targets)) == 1
    target = Path(targets[0])
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "tiny.lock") == ["tiny"]  # no .partial left
    assert prepare("tiny", root=tmp_path) == target  # current: kept as it is
