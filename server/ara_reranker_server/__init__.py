"""The reranker service's gateway: gRPC (reranker.v1, tei.v1) and HTTP rerank APIs in front of Triton.

Rooms: ``reranking`` (the core: one request's walk), ``tokenization``, ``admission``, ``ranking``, ``windows``,
``score_cache`` (what the core uses); ``triton_scorer`` (failover between Triton endpoints, over ``triton_endpoint``,
the one module that talks to Triton, and ``endpoint_health``); ``api/`` (the
transports: convert, call the core, map errors through ``errors.ANSWERS``); ``models``, ``settings``,
``metrics``, ``auth``, ``gateway`` (wiring); ``launcher/`` (``make run``: Triton and the gateway as processes).
"""

__version__ = "0.2.0"
