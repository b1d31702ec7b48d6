"""What the Triton model and the gateway both need to know about a served cross-encoder, defined once.

Imported by the Triton Python-backend model (``model_repository/``), so the modules it uses
(``limits``, ``inputs``, ``files``, ``config``, ``layout``, and the scorer that does its compute: ``scoring``,
``batching``, ``engines``) need only numpy and the standard library at import; an engine imports torch or ONNX
Runtime when it is loaded. The Triton image holds this package and the model repository, not the gateway. ``store``, ``onnx_export`` and
``bert_vocab`` prepare a model directory (``make model``, the Kubernetes model-fetch job) and import
transformers, torch and huggingface_hub when called.
"""
