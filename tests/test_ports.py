"""Listening ports: a gateway never shares an address it was given with another process (gRPC's SO_REUSEPORT would
let it, and split the calls silently), it says which setting it cannot listen on, and the launchers pick their
free ports where no outgoing connection takes them, never the same in two processes, and pick again when another
program took one first."""

from __future__ import annotations

import multiprocessing
import socket
import subprocess
import sys

import pytest

from ara_reranker_client import RerankerClient
from ara_reranker_server import ports
from ara_reranker_server.launcher import gateway_process
from ara_reranker_server.launcher.gateway_process import GatewayProcess
from tools.arabic_text import QUERIES


def _pick(count: int) -> list[int]:
    return [ports.free_port() for _ in range(count)]


def test_free_ports_are_outside_the_ephemeral_range_and_never_given_twice_even_by_two_processes():
    first, last = map(int, open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        picked = [port for part in pool.map(_pick, [1000, 1000]) for port in part]
    assert len(set(picked)) == len(picked)
    assert not [p for p in picked if first <= p <= last], "a port an outgoing connection may take meanwhile"


@pytest.mark.parametrize("setting", ["listen", "http_listen", "metrics_listen"])
def test_a_gateway_refuses_an_address_another_gateway_listens_on_naming_the_setting(gateway, tiny_model_dir, setting):
    address = gateway.args[setting]
    flags = {"triton-endpoints": "127.0.0.1:1", "tokenizer": str(tiny_model_dir), "listen": f"127.0.0.1:{ports.free_port()}",
             "http-listen": f"127.0.0.1:{ports.free_port()}", "metrics-listen": f"127.0.0.1:{ports.free_port()}",
             setting.replace("_", "-"): address}
    command = [sys.executable, "-m", "ara_reranker_server.gateway", *(f"--{k}={v}" for k, v in flags.items())]
    second = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert second.returncode == 1
    assert f"cannot listen on {address} ({setting})" in second.stderr
    with RerankerClient(gateway.target, timeout=60) as client:  # the first one still has all its calls
        assert len(client.rerank(QUERIES[0], ["نص"])) == 1


def test_a_port_another_program_took_between_the_pick_and_the_bind_is_picked_again(triton, tiny_model_dir, monkeypatch):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        picks = iter([taken])
        monkeypatch.setattr(gateway_process, "free_port", lambda: next(picks, None) or ports.free_port())
        args = {"triton_endpoints": triton.grpc_url, "tokenizer": str(tiny_model_dir)}
        with GatewayProcess(args) as gateway, RerankerClient(gateway.target, timeout=60) as client:
            assert gateway.target != f"127.0.0.1:{taken}"
            assert len(client.rerank(QUERIES[0], ["نص"])) == 1
