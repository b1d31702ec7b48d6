"""The APIs the gateway speaks, each a thin transport over the one core (``ara_reranker_server.reranking``).

Each module converts its API's request into a ``RerankJob``, calls ``Calls.rerank`` (model lookup,
the core, metrics and the request log, the same for every API), and converts the outcome, or the error
through ``ara_reranker_server.errors.ANSWERS``, into its API's response:

- ``reranker_grpc``: reranker.v1 over gRPC (this service's own API)
- ``tei_grpc``: tei.v1 over gRPC (text-embeddings-inference's Rerank and Info services)
- ``cohere``: Cohere v1 / Jina (``POST /v1/rerank``) and Cohere v2 (``POST /v2/rerank``) over HTTP
- ``tei_http``: TEI over HTTP (``POST /rerank``, ``GET /info``)
- ``nim``: NVIDIA NIM (``POST /v1/ranking``, ``/v1/retrieval/{model}/reranking``, ``GET /v1/models``, health)
- ``vllm``: vLLM (``POST /score``, ``/v1/score``, and ``/rerank`` with a body of ``documents``)
- ``http``: the HTTP server they share (API keys, body limit, errors in each dialect, ``/health``,
  ``/openapi.json``)
"""
