"""The one padding rule (server/ara_reranker_model/inputs.py): what the gateway sends and model.py computes."""

import numpy as np
import pytest

from ara_reranker_model.inputs import PAD_TOKEN_TYPE, padded_rows
from ara_reranker_server import chunking

pytestmark = pytest.mark.unit  # starts no process: make test-unit


def test_rows_are_right_padded_with_a_mask_over_their_tokens():
    values, mask = padded_rows([[5, 6, 7], [8], np.array([9, 10])], pad=1)
    assert values.dtype == mask.dtype == np.int64
    assert values.tolist() == [[5, 6, 7], [8, 1, 1], [9, 10, 1]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]


def test_a_given_width_pads_further_and_never_cuts():
    values, mask = padded_rows([[5, 6], [8]], pad=0, width=4)
    assert values.tolist() == [[5, 6, 0, 0], [8, 0, 0, 0]] and mask.sum(axis=1).tolist() == [2, 1]
    with pytest.raises(ValueError, match="below the longest row"):
        padded_rows([[1, 2, 3]], pad=0, width=2)


def test_the_gateway_pads_its_chunks_by_the_same_rule():
    assert chunking.padded_rows is padded_rows  # one definition, shared with model.py
    assert PAD_TOKEN_TYPE == 0  # as transformers' tokenizers pad token_type_ids
