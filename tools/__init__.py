"""Development and operations tooling: what prepares and runs the service, never what the gateway runs.

- ``model_store``: ``make model``; download a model or build an offline stand-in (``bert_vocab``: the
  offline BERT tokenizer), and its ONNX export (``onnx_export``)
- ``triton_launcher``: start a real tritonserver with the model repository (``make triton``, tests, benchmarks)
- ``gateway_process``: start ``python -m server.gateway`` as a child process (tests, benchmarks, ``make run``)
- ``child_process``: the one way a server is started as a child process, waited for and stopped
- ``run``: ``make run``; Triton and the gateway together in the foreground
- ``protogen``: ``make proto``; the gRPC stubs in ``reranker/`` and ``tei/``, generated from ``proto/``

The gateway (``server/``) and the Triton model import nothing from here (tests/test_deploy_images.py holds it).
"""
