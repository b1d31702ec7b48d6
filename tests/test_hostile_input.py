"""Hostile and unusual input through the real gateway: always a valid ranking or INVALID_ARGUMENT
naming the limit, never INTERNAL or UNKNOWN, and the scores still equal the in-process model's."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ara_reranker_client import RerankerClient, RerankerError
from ara_reranker_server.launcher.gateway_process import GatewayProcess

ARABIC_EDGE_CASES = [
    "مَا هِيَ عَاصِمَةُ السُّعُودِيَّةِ؟",  # full diacritics (tashkeel)
    "الريــــــــاض",  # tatweel
    "\u200fالرياض\u200e Riyadh \u200f",  # RTL / LTR marks
    "لا\u200dإله\u200cالا",  # zero-width joiner / non-joiner
    "الرياض 🏙️🇸🇦 👍🏽",  # emoji with modifiers and flags
    "نص\x00مع\x07محارف\x1bتحكم\x7f",  # control characters, NUL included
    "\ufeff\u202e\u2066معزول\u2069",  # BOM, bidi override and isolates
    "١٢٣٤٥٦٧٨٩٠ ۱۲۳",  # Arabic-Indic and extended digits
    "ﷺ ﷽ ﻻ",  # presentation forms and ligatures
    " \t\n ",  # whitespace only (as a document: allowed)
    "",  # empty document: allowed, scored
]

LIMITS = {"max_documents": "16", "max_query_chars": "200", "max_document_chars": "2000"}


@pytest.fixture(scope="module")
def limited_gateway(make_gateway):
    return make_gateway(max_inflight_pairs=64, **LIMITS)


@pytest.fixture(scope="module")
def client(limited_gateway):
    # No client-side splitting: the server must see every request whole.
    with RerankerClient(limited_gateway.target, timeout=60, split_large_requests=False) as c:
        yield c


def test_unicode_edge_cases_are_scored_like_the_model_does(client, reference):
    for query in ARABIC_EDGE_CASES[:-2]:
        results = client.rerank(query, ARABIC_EDGE_CASES, raw_scores=True)
        got = np.array([r.score for r in sorted(results, key=lambda r: r.index)], dtype=np.float32)
        np.testing.assert_allclose(got, reference.logits(query, ARABIC_EDGE_CASES), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "query, documents, needle",
    [
        ("س" * 201, ["نص"], "max_query_chars=200"),
        ("سؤال", ["نص"] * 17, "max_documents=16"),
        ("سؤال", ["نص", "ن" * 2001], "document 1 has 2001 characters; max_document_chars=2000"),
    ],
)
def test_limits_are_invalid_argument_naming_the_limit_and_value(client, query, documents, needle):
    with pytest.raises(RerankerError) as err:
        client.rerank(query, documents)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in err.value.details


def test_a_message_over_the_grpc_limit_is_refused_not_crashing(triton, tiny_model_dir, tmp_path):
    args = {"triton_endpoints": triton.grpc_url, "tokenizer": str(tiny_model_dir), "max_message_bytes": "65536"}
    with GatewayProcess(args, log_path=tmp_path / "gateway.log") as gateway:
        with RerankerClient(gateway.target, timeout=30) as c:
            with pytest.raises(RerankerError) as err:
                c.rerank("سؤال", ["ن" * 40000])  # ~80 KB of UTF-8
            assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert len(c.rerank("سؤال", ["نص"])) == 1


def test_the_client_splits_candidate_lists_over_the_server_limit(limited_gateway, reference):
    documents = [f"وثيقة رقم {i} عن الرياض" for i in range(40)]  # server takes 16 per request
    with RerankerClient(limited_gateway.target, timeout=60) as c:
        results = c.rerank("الرياض", documents, top_k=7)
    expected = reference.scores("الرياض", documents)
    assert [r.index for r in results] == sorted(range(40), key=lambda i: (-float(expected[i]), i))[:7]


text = st.text(st.characters(codec="utf-8"), max_size=300)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(query=text, documents=st.lists(text, max_size=20), top_k=st.one_of(st.none(), st.integers(0, 25)),
       truncate=st.booleans())
def test_arbitrary_unicode_gets_a_ranking_or_invalid_argument(client, query, documents, top_k, truncate):
    try:
        results = client.rerank(query, documents, top_k=top_k, truncate=truncate)
    except RerankerError as exc:
        assert exc.code == grpc.StatusCode.INVALID_ARGUMENT, f"{exc.code}: {exc.details}"
        return
    assert query.strip() and documents and len(documents) <= 16
    assert all(0 <= r.index < len(documents) for r in results)
    assert len(results) == (len(documents) if top_k is None else min(top_k, len(documents)))
    assert len({r.index for r in results}) == len(results)
    scores = [r.score for r in results]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)
