"""Run the gateway as a child process (``make run``, benchmarks and test fixtures) and wait until it serves."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.triton_launcher import free_port

__all__ = ["GatewayProcess"]


class GatewayProcess:
    """``python -m server.gateway`` with the given flags, on free loopback ports unless told otherwise."""

    def __init__(self, args: dict[str, str], env: dict[str, str] | None = None, log_path: Path | None = None,
                 credentials: grpc.ChannelCredentials | None = None) -> None:
        """``credentials``: for health checks of a TLS gateway (channel credentials trusting its certificate)."""
        self.args = dict(args)
        self.credentials = credentials
        self.args.setdefault("listen", f"127.0.0.1:{free_port()}")
        self.args.setdefault("metrics_listen", f"127.0.0.1:{free_port()}")
        self.args.setdefault("http_listen", f"127.0.0.1:{free_port()}")
        self.env = env
        self._tmp = tempfile.TemporaryDirectory(prefix="gateway-")
        self.log_path = log_path or Path(self._tmp.name) / "gateway.log"
        self.process: subprocess.Popen | None = None

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
        command = [sys.executable, "-m", "server.gateway"]
        for name, value in self.args.items():
            command += ["--" + name.replace("_", "-"), str(value)]
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env or os.environ.copy())
        log.close()
        self.wait_status(health_pb2.HealthCheckResponse.SERVING if wait_serving else None, timeout_s)

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
        """Wait until health answers ``status`` (or answers at all, when None)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.process and self.process.returncode}:\n{self.log_tail()}")
            current = self.health()
            if current is not None and (status is None or current == status):
                return
            time.sleep(0.1)
        raise TimeoutError(f"gateway health not {status} after {timeout_s}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def terminate(self) -> None:
        """Send SIGTERM (graceful shutdown) without waiting."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not exit in time. Returns the exit code."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode
