"""Run the gateway as a child process (``make run``, benchmarks and test fixtures) and wait until it serves."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ara_reranker_server.launcher.child_process import ChildExited, ChildProcess
from ara_reranker_server.ports import free_port

__all__ = ["GatewayProcess"]

LISTENERS = ("listen", "metrics_listen", "http_listen")  # the gateway's addresses, free loopback ports by default
PORT_TRIES = 3


class GatewayProcess:
    """``python -m ara_reranker_server.gateway`` with the given flags, on free loopback ports unless told otherwise."""

    def __init__(self, args: dict[str, str], env: dict[str, str] | None = None, log_path: Path | None = None,
                 credentials: grpc.ChannelCredentials | None = None, launcher: Sequence[str] = ()) -> None:
        """``credentials``: for health checks of a TLS gateway (channel credentials trusting its certificate).
        ``launcher``: a command that runs the gateway's and execs it, e.g. ``("taskset", "-c", "0")``."""
        self.args = dict(args)
        self.credentials = credentials
        self._picked = [name for name in LISTENERS if name not in self.args]  # ours to pick again if taken meanwhile
        self._pick_ports()
        self.env = env
        self.launcher = tuple(launcher)
        self._tmp = tempfile.TemporaryDirectory(prefix="gateway-")
        self.log_path = log_path or Path(self._tmp.name) / "gateway.log"
        self._child = ChildProcess("gateway", self.log_path)

    @property
    def process(self) -> subprocess.Popen | None:
        """The gateway process while it runs (None before start and after stop)."""
        return self._child.popen

    @property
    def target(self) -> str:
        return self.args["listen"]

    @property
    def http_url(self) -> str:
        """Base URL of the HTTP APIs (https:// when the gateway serves TLS)."""
        scheme = "https" if self.args.get("tls_cert") else "http"
        return f"{scheme}://{self.args['http_listen']}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.args['metrics_listen']}/metrics"

    def __enter__(self) -> "GatewayProcess":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, wait_serving: bool = True, timeout_s: float = 60.0) -> None:
        """Start and wait. A port this launcher picked that another process took before the gateway bound it
        is picked again (up to PORT_TRIES starts); a port it was given is never changed."""
        for attempt in range(1, PORT_TRIES + 1):
            command = [*self.launcher, sys.executable, "-m", "ara_reranker_server.gateway"]
            for name, value in self.args.items():
                command += ["--" + name.replace("_", "-"), str(value)]
            self._child.start(command, env=self.env or None)
            try:
                self.wait_status(health_pb2.HealthCheckResponse.SERVING if wait_serving else None, timeout_s)
                return
            except ChildExited as exc:
                taken = [name for name in self._picked if f"({name})" in str(exc) and "cannot listen" in str(exc)]
                if not taken or attempt == PORT_TRIES:
                    raise
                self._pick_ports(taken)

    def _pick_ports(self, names: Sequence[str] | None = None) -> None:
        for name in self._picked if names is None else names:
            self.args[name] = f"127.0.0.1:{free_port()}"

    def health(self, timeout_s: float = 1.0) -> int | None:
        """The health status of the overall server, or None if it does not answer."""
        channel = grpc.secure_channel(self.target, self.credentials) if self.credentials else grpc.insecure_channel(self.target)
        with channel:
            try:
                response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
            except grpc.RpcError:
                return None
        return response.status

    def wait_status(self, status: int | None, timeout_s: float) -> None:
        """Wait until health answers ``status`` (or answers at all, when None); RuntimeError (ChildExited)
        if the gateway exits first, TimeoutError after ``timeout_s``."""

        def answered() -> bool:
            current = self.health()
            return current is not None and (status is None or current == status)

        self._child.wait_ready(answered, timeout_s, poll_s=0.1)

    def log_tail(self, lines: int = 40) -> str:
        return self._child.log_tail(lines)

    def terminate(self) -> None:
        """Send SIGTERM (graceful shutdown) without waiting."""
        self._child.send(signal.SIGTERM)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not exit in time. Returns the exit code."""
        return self._child.stop(timeout_s)
