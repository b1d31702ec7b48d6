"""The NVIDIA NIM and vLLM clients users already have, pointed at the gateway by URL only, against the real
gateway and Triton: LangChain's and LlamaIndex's ``NVIDIARerank``, Haystack's ``NvidiaRanker``, and LiteLLM's
``nvidia_nim/`` and ``hosted_vllm/`` rerank. Each gets reranker.v1's order and scores: the logit from the NIM
clients, sigmoid(logit) from vLLM's. With an API key each sends it the way it always does and is let in, and
its placeholder key is kept out; without keys on the gateway, the placeholders pass."""

from __future__ import annotations

import litellm
import pytest
from haystack import Document as HaystackDocument
from haystack.utils import Secret
from haystack_integrations.components.rankers.nvidia import NvidiaRanker
from langchain_core.documents import Document as LangChainDocument
from langchain_nvidia_ai_endpoints import NVIDIARerank as LangChainNVIDIARerank
from llama_index.core.schema import NodeWithScore, TextNode
from llama_index.postprocessor.nvidia_rerank import NVIDIARerank as LlamaIndexNVIDIARerank

from tests.helpers import assert_same_ranking, v1_ranking
from tools.arabic_text import QUERIES, mixed_passages

# LiteLLM's pydantic models and LangChain's NVIDIA client (unknown model names) warn on use.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

KEY = "nim-client-test-key"
MODEL = "ara_tiny"  # served name with an underscore: LiteLLM's nvidia_nim/ writes it "ara.tiny" in the body
MODEL_ID = "offline-tiny"
TOP = 4


@pytest.fixture(scope="module")
def served(make_gateway):
    """A gateway with an API key: every client must send it as it does to NVIDIA or vLLM."""
    return make_gateway(api_keys=KEY, model_name=MODEL, model_id=MODEL_ID)


@pytest.fixture(scope="module")
def documents(rng):
    return mixed_passages(rng, 10)


@pytest.fixture(scope="module")
def expected(served, documents):
    """reranker.v1's answers, (index, value) best first: the logits and the scores, for QUERIES[0]."""
    return {"logit": v1_ranking(served.target, QUERIES[0], documents, KEY, raw_scores=True),
            "score": v1_ranking(served.target, QUERIES[0], documents, KEY)}


def langchain_ranking(base_url: str, documents, **options):
    reranker = LangChainNVIDIARerank(base_url=f"{base_url}/v1", top_n=TOP, **options)
    ranked = reranker.compress_documents([LangChainDocument(page_content=d, metadata={"i": i}) for i, d in enumerate(documents)],
                                         QUERIES[0])
    return [(d.metadata["i"], d.metadata["relevance_score"]) for d in ranked]


def llama_index_ranking(base_url: str, documents, **options):
    reranker = LlamaIndexNVIDIARerank(base_url=f"{base_url}/v1", top_n=TOP, **options)
    nodes = [NodeWithScore(node=TextNode(text=d, id_=str(i)), score=0.0) for i, d in enumerate(documents)]
    return [(int(n.node.id_), n.score) for n in reranker.postprocess_nodes(nodes, query_str=QUERIES[0])]


def haystack_ranking(base_url: str, documents, **options):
    ranker = NvidiaRanker(api_url=f"{base_url}/v1/", top_k=TOP, **options)  # a trailing "/": it posts to /v1//ranking
    ranked = ranker.run(query=QUERIES[0], documents=[HaystackDocument(content=d, id=str(i)) for i, d in enumerate(documents)])
    return [(int(d.id), d.score) for d in ranked["documents"]]


def test_langchain_nvidia_rerank(served, documents, expected):
    got = langchain_ranking(served.http_url, documents, model=MODEL, api_key=KEY)
    assert_same_ranking(got, expected["logit"], TOP)
    with pytest.raises(Exception, match="401"):  # no key: its placeholder "Bearer **********"
        langchain_ranking(served.http_url, documents, model=MODEL)


def test_llama_index_nvidia_rerank(served, documents, expected):
    for model in (MODEL, MODEL_ID):  # it checks the name against /v1/models first
        assert_same_ranking(llama_index_ranking(served.http_url, documents, model=model, api_key=KEY), expected["logit"], TOP)
    with pytest.raises(ValueError, match="No locally hosted"):
        LlamaIndexNVIDIARerank(base_url=f"{served.http_url}/v1", model="not-served", api_key=KEY)


@pytest.mark.parametrize("model", [MODEL, None], ids=["named", "default"])
def test_haystack_nvidia_ranker(served, documents, expected, model):
    got = haystack_ranking(served.http_url, documents, model=model, api_key=Secret.from_token(KEY))
    assert_same_ranking(got, expected["logit"], TOP)
    with pytest.raises(ValueError, match="invalid API key"):
        haystack_ranking(served.http_url, documents, model=model, api_key=Secret.from_token("wrong"))


def test_litellm_nvidia_nim_rerank(served, documents, expected):
    response = litellm.rerank(model=f"nvidia_nim/{MODEL}", query=QUERIES[0], documents=documents, top_n=TOP,
                              api_base=served.http_url, api_key=KEY)
    assert_same_ranking([(r["index"], r["relevance_score"]) for r in response.results], expected["logit"], TOP)
    assert all(r["document"]["text"] == documents[r["index"]] for r in response.results)


@pytest.mark.parametrize("suffix", ["", "/v1"], ids=["rerank", "v1-rerank"])
def test_litellm_hosted_vllm_rerank(served, documents, expected, suffix):
    response = litellm.rerank(model=f"hosted_vllm/{MODEL}", query=QUERIES[0], documents=documents, top_n=TOP,
                              api_base=served.http_url + suffix, api_key=KEY)
    assert_same_ranking([(r["index"], r["relevance_score"]) for r in response.results], expected["score"], TOP)
    assert all(r["document"]["text"] == documents[r["index"]] for r in response.results)
    with pytest.raises(litellm.AuthenticationError):  # no key: its placeholder "Bearer fake-api-key"
        litellm.rerank(model=f"hosted_vllm/{MODEL}", query=QUERIES[0], documents=documents, api_base=served.http_url)


def test_the_nim_clients_placeholder_keys_pass_a_gateway_without_keys(gateway, documents):
    """LangChain sends "Bearer **********", LlamaIndex "Bearer NO_API_KEY_PROVIDED", Haystack (api_key=None) none,
    LiteLLM's hosted_vllm "Bearer fake-api-key": all served the same ranking."""
    logits = v1_ranking(gateway.target, QUERIES[0], documents, raw_scores=True)
    scores = v1_ranking(gateway.target, QUERIES[0], documents)
    assert_same_ranking(langchain_ranking(gateway.http_url, documents, model=MODEL_ID), logits, TOP)
    assert_same_ranking(llama_index_ranking(gateway.http_url, documents, model=MODEL_ID), logits, TOP)
    assert_same_ranking(haystack_ranking(gateway.http_url, documents, model=None, api_key=None), logits, TOP)
    response = litellm.rerank(model=f"hosted_vllm/{MODEL_ID}", query=QUERIES[0], documents=documents, top_n=TOP,
                              api_base=gateway.http_url)
    assert_same_ranking([(r["index"], r["relevance_score"]) for r in response.results], scores, TOP)
