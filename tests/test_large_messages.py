"""Large messages are read and written a slice at a time (server/ara_reranker_server/api/large_messages.py): the same
messages as protobuf's and json's own one-go functions, the same errors, and the event loop turns meanwhile.

End to end (a real gateway and Triton: a large request over gRPC and HTTP scores and echoes like a small one) in
tests/test_gateway_e2e.py, tests/test_tei_grpc.py and tests/test_http_apis.py."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ara_reranker_client.v1 import reranker_pb2
from ara_reranker_server.api import large_messages
from ara_reranker_server.api.large_messages import (
    INLINE_BYTES,
    is_large,
    json_chunks,
    loads_object,
    parse_proto,
    serialize_proto,
    strings,
)
from ara_reranker_server.errors import InvalidRequest
from ara_reranker_server.tei.v1 import tei_pb2
from tools.arabic_text import SENTENCES

pytestmark = pytest.mark.unit  # starts no process: make test-unit


def _documents(count: int, chars: int) -> list[str]:
    text = " ".join(SENTENCES)
    # Unlike lengths and contents, some with characters outside the BMP and JSON escapes.
    return [(f"{i} \"😀\"\n\\ " + text * (chars // len(text) + 1))[: chars - (i % 7) * 13] for i in range(count)]


def _request(count: int = 400, chars: int = 6000) -> reranker_pb2.RerankRequest:
    request = reranker_pb2.RerankRequest(query="ما هي عاصمة مصر؟", documents=_documents(count, chars), top_k=7,
                                         return_documents=True, model="ara", priority=reranker_pb2.PRIORITY_BATCH,
                                         truncation=reranker_pb2.TRUNCATION_SPLIT, window_tokens=128, max_windows=3)
    assert is_large(request.ByteSize())
    return request


async def _turns_while(coroutine) -> tuple[object, int]:
    """The coroutine's result, and how many times a task waiting its turn ran meanwhile."""
    turns, done = 0, False

    async def ticker() -> None:  # sleep(0): one event-loop turn, the thing counted (no time is waited)
        nonlocal turns
        while not done:
            await asyncio.sleep(0)
            turns += 1

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)  # the ticker's first turn, before the count starts
    turns = 0
    try:
        result = await coroutine
    finally:
        done = True
        await task
    return result, turns


def test_a_large_protobuf_request_is_the_same_message_read_in_slices():
    request = _request()
    raw = request.SerializeToString()
    parsed, turns = asyncio.run(_turns_while(parse_proto(reranker_pb2.RerankRequest, raw)))
    assert parsed == request
    assert parsed.HasField("top_k") and parsed.HasField("window_tokens") and not parsed.HasField("max_document_tokens")
    assert turns >= len(raw) // large_messages.SLICE_BYTES - 1  # the loop ran between slices

    documents, turns = asyncio.run(_turns_while(strings(parsed.documents, len(raw))))
    assert documents == list(request.documents)
    assert turns >= 2


def test_a_large_request_whose_fields_repeat_reads_as_the_parser_does():
    """The last singular value wins and repeated fields append, wherever the cuts fall."""
    first, second = _request(), reranker_pb2.RerankRequest(query="second", documents=["x"], top_k=2)
    raw = first.SerializeToString() + second.SerializeToString()
    assert asyncio.run(parse_proto(reranker_pb2.RerankRequest, raw)) == reranker_pb2.RerankRequest.FromString(raw)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "bad utf-8"])
def test_a_large_message_that_is_not_one_is_invalid_request_naming_the_message(damage):
    raw = _request().SerializeToString()
    if damage == "truncated":
        raw = raw[:-100]
    elif damage == "garbage":
        raw = raw[: INLINE_BYTES + 10] + b"\xff" * 20
    else:  # a string field that is not UTF-8
        raw = raw + reranker_pb2.RerankRequest(query="q").SerializeToString().replace(b"q", b"\xff")
    with pytest.raises(InvalidRequest, match="not a valid reranker.v1.RerankRequest message"):
        asyncio.run(parse_proto(reranker_pb2.RerankRequest, raw))
    with pytest.raises(InvalidRequest, match="not a valid reranker.v1.RerankRequest message"):
        asyncio.run(parse_proto(reranker_pb2.RerankRequest, raw[:1000] + b"\xff\xff"))  # small: read in one go


def test_a_large_response_is_serialized_in_slices_to_the_same_message():
    documents = _documents(300, 6000)
    results = [reranker_pb2.RankedDocument(index=i, score=0.5, logit=-1.0 * i, document=d) for i, d in enumerate(documents)]
    head = reranker_pb2.RerankResponse(usage=reranker_pb2.Usage(documents=300, input_tokens=12345), model_id="m")
    whole = reranker_pb2.RerankResponse(results=results, usage=head.usage, model_id="m")
    raw, turns = asyncio.run(_turns_while(serialize_proto(head, "results", results, large=True)))
    assert reranker_pb2.RerankResponse.FromString(raw) == whole
    assert turns >= 2
    tei = tei_pb2.RerankResponse(ranks=[tei_pb2.Rank(index=1, score=0.25, text="نص")])
    assert asyncio.run(serialize_proto(tei_pb2.RerankResponse(), "ranks", list(tei.ranks), large=False)) == tei.SerializeToString()


def _body(**extra) -> dict:
    return {"model": "ara", "query": "ما هي عاصمة مصر؟", "top_n": 3, "return_documents": True,
            "documents": _documents(300, 6000), "nested": {"a": [1, 2.5, None, True], "b": "x"}, **extra}


@pytest.mark.parametrize("encode", [
    lambda d: json.dumps(d, ensure_ascii=False).encode(),
    lambda d: json.dumps(d).encode(),  # \\u escapes
    lambda d: json.dumps(d, ensure_ascii=False, indent=2).encode(),  # whitespace everywhere
    lambda d: b"\xef\xbb\xbf" + json.dumps(d, ensure_ascii=False).encode(),  # UTF-8 with a BOM
    lambda d: json.dumps(d, ensure_ascii=False).encode("utf-16"),
    lambda d: json.dumps({**d, "documents": [{"text": t, "title": "t"} for t in d["documents"]]}, ensure_ascii=False).encode(),
    lambda d: json.dumps(d, ensure_ascii=False).encode()[:-1] + b', "query": "the last one wins"}',
    lambda d: json.dumps(d, ensure_ascii=False).encode()[:-1] + b', "empty": [], "obj": {}, "list": [[], [1]]}',
], ids=["utf-8", "ascii escapes", "indented", "bom", "utf-16", "objects", "repeated key", "empty values"])
def test_a_large_json_body_is_read_in_slices_as_json_loads_reads_it(encode):
    raw = encode(_body())
    assert is_large(len(raw))
    data, turns = asyncio.run(_turns_while(loads_object(raw)))
    assert data == json.loads(raw)
    assert turns >= 2


@pytest.mark.parametrize("raw", [
    b'{"query": "q", "documents": ["' + "نص".encode() * 400_000 + b'", ]}',  # a trailing comma
    b'{"query": "q", "documents": ["' + "نص".encode() * 400_000 + b'"]} extra',
    b'{"query": "q" "documents": ["' + "نص".encode() * 400_000 + b'"]}',
    b'{"documents": ["' + "نص".encode() * 400_000 + b'"',  # cut short
    b'["' + "نص".encode() * 400_000 + b'"]',  # not an object: json.loads reads it, the caller refuses it
    b'{"documents": ["' + "نص".encode() * 400_000 + b'\xff"]}',  # not UTF-8
], ids=["trailing comma", "extra data", "missing comma", "cut short", "array", "not utf-8"])
def test_a_large_json_body_that_is_not_an_object_gets_json_loads_verdict(raw):
    assert is_large(len(raw))
    try:
        expected = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        with pytest.raises(type(exc)) as raised:
            asyncio.run(loads_object(raw))
        assert str(raised.value) == str(exc)
    else:
        assert asyncio.run(loads_object(raw)) == expected


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5), max_leaves=20)


@settings(max_examples=150, deadline=None)
@given(body=st.dictionaries(st.text(max_size=8), _json_values | st.lists(_json_values, max_size=12), max_size=6),
       slice_bytes=st.integers(1, 40), indent=st.sampled_from([None, 0, 3]), ascii=st.booleans())
def test_json_cut_into_slices_anywhere_reads_as_json_loads_reads_it(body, slice_bytes, indent, ascii):
    """Slices of a few bytes: every cut falls somewhere (inside a string, a number, a literal, between tokens)."""
    raw = json.dumps(body, indent=indent, ensure_ascii=ascii).encode()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(large_messages, "INLINE_BYTES", 0)
        patch.setattr(large_messages, "SLICE_BYTES", slice_bytes)
        assert asyncio.run(loads_object(raw)) == json.loads(raw)
        broken = raw[: len(raw) // 2]
        with pytest.raises((json.JSONDecodeError, UnicodeDecodeError)) as expected:
            json.loads(broken)
        with pytest.raises(expected.type, match=re.escape(str(expected.value))):
            asyncio.run(loads_object(broken))


@settings(max_examples=100, deadline=None)
@given(documents=st.lists(st.text(max_size=40), max_size=12), query=st.text(max_size=20),
       top_k=st.none() | st.integers(0, 2**31 - 1), slice_bytes=st.integers(1, 30))
def test_protobuf_cut_into_slices_anywhere_reads_as_the_parser_does(documents, query, top_k, slice_bytes):
    request = reranker_pb2.RerankRequest(query=query, documents=documents, top_k=top_k, raw_scores=True,
                                         priority=reranker_pb2.PRIORITY_BATCH)
    raw = request.SerializeToString()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(large_messages, "INLINE_BYTES", -1)
        patch.setattr(large_messages, "SLICE_BYTES", slice_bytes)
        parsed = asyncio.run(parse_proto(reranker_pb2.RerankRequest, raw))
        assert parsed == request and parsed.HasField("top_k") == (top_k is not None)
        assert asyncio.run(strings(parsed.documents, len(raw) + 1)) == documents
        if documents:
            head = reranker_pb2.RerankResponse(model_id=query)
            items = [reranker_pb2.RankedDocument(index=i, document=d) for i, d in enumerate(documents)]
            written = asyncio.run(serialize_proto(head, "results", items, large=True))
            assert reranker_pb2.RerankResponse.FromString(written) == reranker_pb2.RerankResponse(results=items, model_id=query)


def test_a_large_json_value_longer_than_many_slices_is_read_whole():
    raw = json.dumps({"query": "q", "documents": ["نص " * 1_000_000, "x", 12345678901234567890]}, ensure_ascii=False).encode()
    data, turns = asyncio.run(_turns_while(loads_object(raw)))
    assert data == json.loads(raw) and turns >= 3


def test_a_large_json_answer_is_written_in_slices_as_json_dumps_writes_it():
    def dumps(payload):
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))

    results = [{"index": i, "relevance_score": 0.5, "document": {"text": t}} for i, t in enumerate(_documents(300, 6000))]
    for payload in ({"id": "x", "results": results, "meta": {"billed_units": {"search_units": 1}}, "n": [1, 2], "e": []},
                    results, [], {}, "just a string", {"a": [1]}):
        chunks, turns = asyncio.run(_turns_while(json_chunks(payload, dumps)))
        assert b"".join(chunks) == dumps(payload).encode()
        if payload is results:
            assert turns >= 2 and len(chunks) >= 2 and max(len(c) for c in chunks) < 2 * large_messages.SLICE_BYTES
