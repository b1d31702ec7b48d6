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
WORKDIR /src
COPY pyproject.toml ./
COPY server ./server
COPY client ./client
RUN pip install --no-cache-dir --no-deps .

FROM python:3.11-slim-bookworm
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
ENTRYPOINT ["python", "-m", "server.gateway"]
