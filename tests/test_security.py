"""API keys and TLS against a real gateway process (session Triton, tiny offline model)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from ara_reranker_client import RerankerClient
from ara_reranker_server.launcher.gateway_process import GatewayProcess
from tests.helpers import code_of
from tools.arabic_text import QUERIES

DOCUMENTS = ["الرياض عاصمة السعودية", "القاهرة مدينة كبيرة"]


def gateway_args(triton, model_dir: Path, **extra: str) -> dict[str, str]:
    return {"triton_endpoints": triton.grpc_url, "tokenizer": str(model_dir), **extra}


def test_api_key_is_required_and_checked(triton, tiny_model_dir, tmp_path):
    args = gateway_args(triton, tiny_model_dir, api_keys="first-key,second-key")
    with GatewayProcess(args, log_path=tmp_path / "gateway.log") as gateway:
        with RerankerClient(gateway.target) as anonymous:
            assert code_of(lambda: anonymous.rerank(QUERIES[0], DOCUMENTS)) == grpc.StatusCode.UNAUTHENTICATED
        with RerankerClient(gateway.target, api_key="wrong-key") as wrong:
            assert code_of(lambda: wrong.rerank(QUERIES[0], DOCUMENTS)) == grpc.StatusCode.UNAUTHENTICATED
        with RerankerClient(gateway.target, api_key="first-ke") as prefix:
            assert code_of(lambda: prefix.rerank(QUERIES[0], DOCUMENTS)) == grpc.StatusCode.UNAUTHENTICATED
        for key in ("first-key", "second-key"):
            with RerankerClient(gateway.target, api_key=key) as client:
                assert len(client.rerank(QUERIES[0], DOCUMENTS)) == 2
                assert client.info().auth_required
        # Health stays open for load balancers.
        assert gateway.health() == health_pb2.HealthCheckResponse.SERVING
        log = gateway.log_path.read_text()
    assert "first-key" not in log and "second-key" not in log and "wrong-key" not in log
    assert DOCUMENTS[0] not in log  # no document text unless log_documents


def make_certificates(directory: Path) -> dict[str, Path]:
    """A test CA, a server certificate for localhost/127.0.0.1 and a client certificate, made with openssl."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca", "-keyout", "ca.key", "-out", "ca.pem")
    (directory / "san.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.csr")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1",
            "-extfile", "san.cnf", "-out", f"{name}.pem")
    return {name: directory / name for name in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> dict[str, Path]:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def test_tls_with_a_certificate_made_by_the_test(triton, tiny_model_dir, tmp_path, certificates):
    c = certificates
    args = gateway_args(triton, tiny_model_dir, tls_cert=str(c["server.pem"]), tls_key=str(c["server.key"]))
    trust = grpc.ssl_channel_credentials(c["ca.pem"].read_bytes())
    with GatewayProcess(args, log_path=tmp_path / "gateway.log", credentials=trust) as gateway:
        with RerankerClient(gateway.target, root_certificates=c["ca.pem"]) as client:
            assert len(client.rerank(QUERIES[0], DOCUMENTS)) == 2
        with RerankerClient(gateway.target) as plaintext:  # a plaintext client cannot talk to a TLS port
            assert code_of(lambda: plaintext.rerank(QUERIES[0], DOCUMENTS)) == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_requires_a_client_certificate(triton, tiny_model_dir, tmp_path, certificates):
    c = certificates
    args = gateway_args(triton, tiny_model_dir, tls_cert=str(c["server.pem"]), tls_key=str(c["server.key"]),
                        tls_client_ca=str(c["ca.pem"]))
    trust = grpc.ssl_channel_credentials(c["ca.pem"].read_bytes(), c["client.key"].read_bytes(), c["client.pem"].read_bytes())
    with GatewayProcess(args, log_path=tmp_path / "gateway.log", credentials=trust) as gateway:
        with RerankerClient(gateway.target, root_certificates=c["ca.pem"], client_cert=c["client.pem"], client_key=c["client.key"]) as client:
            assert len(client.rerank(QUERIES[0], DOCUMENTS)) == 2
        with RerankerClient(gateway.target, root_certificates=c["ca.pem"]) as no_certificate:
            assert code_of(lambda: no_certificate.rerank(QUERIES[0], DOCUMENTS)) == grpc.StatusCode.UNAVAILABLE


def test_triton_listens_on_loopback_only_by_default(triton):
    assert triton.options.host == "127.0.0.1"
    with grpc.insecure_channel(triton.grpc_url) as channel:  # reachable on loopback (sanity)
        grpc.channel_ready_future(channel).result(timeout=5)
    rows = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):  # state 0A = LISTEN; addresses in kernel hex
        with open(table) as tcp:
            rows += [line.split() for line in tcp.read().splitlines()[1:]]
    ports = {triton.options.grpc_port, triton.options.http_port, triton.options.metrics_port}
    listeners = {int(row[1].split(":")[1], 16): row[1].split(":")[0] for row in rows if row[3] == "0A"}
    assert ports <= set(listeners), "Triton's ports are not all listening"
    loopback = {"0100007F", "0000000000000000FFFF00000100007F"}  # 127.0.0.1, and as IPv4-mapped IPv6
    assert {listeners[p] for p in ports} <= loopback, "Triton must listen on 127.0.0.1 only"
