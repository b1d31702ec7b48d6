"""model.py refuses, at load time and with a clear reason, models it would serve wrongly. (BERT-style
cross-encoders, once refused for their token type ids, are served: tests/test_multi_model.py.)"""

from __future__ import annotations

import pytest
import torch
from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

from ara_reranker_server.launcher.triton_launcher import TritonOptions, TritonServer, TritonStartError


def save(model, path):
    model.save_pretrained(path)
    return path


@pytest.mark.parametrize(
    "make_model, reason",
    [
        # A classifier with several labels is not a reranker.
        (lambda: XLMRobertaForSequenceClassification(XLMRobertaConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1,
                                                                      num_attention_heads=2, intermediate_size=32,
                                                                      type_vocab_size=1, num_labels=3)),
         "num_labels=3"),
    ],
)
def test_triton_refuses_to_serve_a_model_it_would_score_wrongly(make_model, reason, tmp_path):
    torch.manual_seed(0)
    model_dir = save(make_model(), tmp_path / "model")
    with pytest.raises(TritonStartError) as err:
        TritonServer(TritonOptions(model_dir=model_dir, log_path=tmp_path / "triton.log", startup_timeout_s=120)).start()
    assert reason in str(err.value)
