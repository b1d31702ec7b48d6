"""The clients users already have, pointed at the gateway by URL only, against the real gateway and
Triton: the official ``cohere`` SDK (v1 ``Client`` and v2 ``ClientV2``), LiteLLM's ``rerank`` (Cohere and
Jina providers), LlamaIndex's TEI reranker and Haystack's TEI ranker over HTTP and over gRPC (tei.v1,
found through server reflection). Each gets reranker.v1's scores and order; with an API key, each sends
it the way it always does and is let in (and kept out with a wrong one)."""

from __future__ import annotations

import cohere
import litellm
import pytest
from haystack import Document
from haystack.utils import Secret
from haystack_integrations.components.rankers.huggingface_api import HuggingFaceTEIRanker
from llama_index.core.schema import NodeWithScore, TextNode
from llama_index.postprocessor.tei_rerank import TextEmbeddingInference

from tests.helpers import assert_same_ranking, v1_ranking
from tools.arabic_text import QUERIES, mixed_passages

# LiteLLM's pydantic models warn about their own TypedDicts on import.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

KEY = "client-test-key"
MODEL = "offline-tiny"
TOP = 4


@pytest.fixture(scope="module")
def served(make_gateway):
    """A gateway with an API key: every client must send it as it does to the vendor."""
    return make_gateway(api_keys=KEY, model_id=MODEL)


@pytest.fixture(scope="module")
def documents(rng):
    return mixed_passages(rng, 10)


@pytest.fixture(scope="module")
def expected(served, documents):
    """reranker.v1's answer: (index, score) best first, for QUERIES[0] and every document."""
    return v1_ranking(served.target, QUERIES[0], documents, KEY)


def test_cohere_sdk_v1_client(served, documents, expected):
    co = cohere.Client(base_url=served.http_url, api_key=KEY)
    response = co.rerank(model=MODEL, query=QUERIES[0], documents=documents, top_n=TOP)
    assert_same_ranking([(r.index, r.relevance_score) for r in response.results], expected, TOP)
    with pytest.raises(cohere.errors.UnauthorizedError):
        cohere.Client(base_url=served.http_url, api_key="wrong").rerank(model=MODEL, query=QUERIES[0], documents=documents)
    with pytest.raises(cohere.errors.NotFoundError):
        co.rerank(model="rerank-english-v3.0", query=QUERIES[0], documents=documents)


def test_cohere_sdk_v2_client(served, documents, expected):
    co = cohere.ClientV2(base_url=served.http_url, api_key=KEY)
    response = co.rerank(model=MODEL, query=QUERIES[0], documents=documents, top_n=TOP, max_tokens_per_doc=4096)
    assert_same_ranking([(r.index, r.relevance_score) for r in response.results], expected, TOP)
    with pytest.raises(cohere.errors.BadRequestError):
        co.rerank(model=MODEL, query=QUERIES[0], documents=documents, top_n=0)


@pytest.mark.parametrize("provider", ["cohere", "jina_ai"])
def test_litellm_rerank(served, documents, expected, provider):
    response = litellm.rerank(model=f"{provider}/{MODEL}", query=QUERIES[0], documents=documents, top_n=TOP,
                              api_base=served.http_url, api_key=KEY)
    assert_same_ranking([(r["index"], r["relevance_score"]) for r in response.results], expected, TOP)


def test_llama_index_tei_reranker(served, documents, expected):
    reranker = TextEmbeddingInference(base_url=served.http_url, top_n=TOP, auth_token=f"Bearer {KEY}")
    nodes = [NodeWithScore(node=TextNode(text=d, id_=str(i)), score=0.0) for i, d in enumerate(documents)]
    ranked = reranker.postprocess_nodes(nodes, query_str=QUERIES[0])
    assert_same_ranking([(int(n.node.id_), n.score) for n in ranked], expected, TOP)


@pytest.mark.parametrize("use_grpc", [False, True], ids=["http", "grpc"])
def test_haystack_tei_ranker(served, documents, expected, use_grpc):
    url = served.target if use_grpc else served.http_url
    ranker = HuggingFaceTEIRanker(url=url, top_k=TOP, use_grpc=use_grpc, token=Secret.from_token(KEY))
    ranked = ranker.run(query=QUERIES[0], documents=[Document(content=d, id=str(i)) for i, d in enumerate(documents)])["documents"]
    assert_same_ranking([(int(d.id), d.score) for d in ranked], expected, TOP)
    denied = HuggingFaceTEIRanker(url=url, top_k=TOP, use_grpc=use_grpc, token=Secret.from_token("wrong"), max_retries=1)
    with pytest.raises(Exception, match="(?i)401|unauthenticated|unauthorized"):
        denied.run(query=QUERIES[0], documents=[Document(content=documents[0])])
