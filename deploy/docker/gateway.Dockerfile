# syntax=docker/dockerfile:1
# The reranker's gRPC gateway: tokenizes, calls Triton, ranks. No torch, no transformers, no GPU.
# Build from the repository root:
#   docker build -f deploy/docker/gateway.Dockerfile -t ara-reranker-gateway:0.2.0 .
# It runs as UID 10001 with a read-only root filesystem: it writes nothing (no bytecode, logs on stderr).
# The model's tokenizer directory (tokenizer.json, tokenizer_config.json) is mounted at /models.

FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY deploy/docker/requirements-gateway.txt /tmp/requirements-gateway.txt
RUN pip install --no-cache-dir -r /tmp/requirements-gateway.txt
# The two distributions the gateway runs (the client's reranker.v1 stubs, the service), installed as wheels
# without their dependency ranges: the pins above are what runs (tests/test_deploy_images.py follows the
# gateway's imports and checks that these sources and pins hold them all).
COPY client /src/client
COPY pyproject.toml /src/pyproject.toml
COPY server /src/server
RUN pip install --no-cache-dir --no-deps /src/client /src

FROM python:3.11-slim-bookworm
# The project's version (ara_reranker_server.__version__; tests/test_deploy_images.py holds them equal).
ARG VERSION=0.2.0
LABEL org.opencontainers.image.title="ara-reranker-gateway" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RERANKER_LISTEN=0.0.0.0:50051 \
    RERANKER_METRICS_LISTEN=0.0.0.0:9464 \
    RERANKER_HTTP_LISTEN=0.0.0.0:8080 \
    RERANKER_TOKENIZER=/models/ara-reranker-v1
USER 10001:10001
WORKDIR /tmp
EXPOSE 50051 8080 9464
ENTRYPOINT ["python", "-m", "ara_reranker_server.gateway"]
