# syntax=docker/dockerfile:1
# The reranker's gRPC gateway: tokenizes, calls Triton, ranks. No torch, no transformers, no GPU.
# Build from the repository root:
#   docker build -f deploy/docker/gateway.Dockerfile -t ara-reranker-gateway:0.1.0 .
# It runs as UID 10001 with a read-only root filesystem: it writes nothing (no bytecode, logs on stderr).
# The model's tokenizer directory (tokenizer.json, tokenizer_config.json) is mounted at /models.

FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY deploy/docker/requirements-gateway.txt /tmp/requirements-gateway.txt
RUN pip install --no-cache-dir -r /tmp/requirements-gateway.txt

FROM python:3.11-slim-bookworm
COPY --from=build /opt/venv /opt/venv
# The gateway's own code and nothing else: server/ and the generated stubs it serves, run from source
# (tests/test_deploy_images.py follows the gateway's imports and checks that these directories hold them all).
COPY server /opt/ara-reranker/server
COPY reranker /opt/ara-reranker/reranker
COPY tei /opt/ara-reranker/tei
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/opt/ara-reranker \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RERANKER_LISTEN=0.0.0.0:50051 \
    RERANKER_METRICS_LISTEN=0.0.0.0:9464 \
    RERANKER_HTTP_LISTEN=0.0.0.0:8080 \
    RERANKER_TOKENIZER=/models/ara-reranker-v1
USER 10001:10001
WORKDIR /tmp
EXPOSE 50051 8080 9464
ENTRYPOINT ["python", "-m", "server.gateway"]
