"""Several gateway processes on one set of ports (``workers`` > 1), so that a gateway pod uses every core.

Each worker is a whole gateway (``python -m ara_reranker_server.gateway`` with the same flags, ``--workers 1
--reuse-port true``): its own event loop, tokenizer, Triton channels, admission bounds, dispatcher and score cache.
They listen on the same gRPC and HTTP ports with SO_REUSEPORT and the kernel spreads incoming connections over them
(a long-lived channel stays with the worker it reached: many callers, or many channels, spread; one does not).

This process only supervises: it starts the workers, starts again one that exits (a crash, the OOM killer) after a
short backoff, forwards SIGTERM / SIGINT (each worker drains and finishes its calls as one gateway does) and serves
``/metrics``: every worker's metrics, read from its private loopback port at scrape time, each series with a
``worker`` label (sum them in queries: ``sum by (model) (rate(reranker_requests_total[5m]))``), and
``reranker_gateway_workers_up`` (workers that answered this scrape).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from ara_reranker_server.metrics import serve_metrics
from ara_reranker_server.ports import free_port
from ara_reranker_server.settings import Settings

__all__ = ["serve_workers", "worker_count", "WorkerMetrics"]

log = logging.getLogger("ara_reranker_server.workers")

# A worker that exits is started again after this long (doubling while it keeps exiting within a minute, at most 30 s).
RESTART_BACKOFF_S = (1.0, 30.0)
# Where a container's CPU limit is (cgroup v2: "<quota> <period>" in microseconds, or "max <period>").
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
# How long one worker's /metrics may take at scrape time before the scrape goes on without it.
SCRAPE_TIMEOUT_S = 2.0


def worker_count(settings: Settings, cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The number of workers ``settings`` ask for; 0: one per core this process may use, which in a container is its
    CPU limit (cgroup v2 ``cpu.max``, rounded up) when that is below the cores it may run on."""
    if settings.workers:
        return settings.workers
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = cpu_max.read_text().split()
    except (OSError, ValueError):  # no cgroup v2 limit file here
        return cores
    return cores if quota == "max" else max(1, min(cores, math.ceil(int(quota) / int(period))))


@dataclass
class _Worker:
    index: int
    metrics_port: int
    process: subprocess.Popen | None = None
    started: float = 0.0
    backoff_s: float = RESTART_BACKOFF_S[0]
    restart_at: float | None = None  # when an exited worker is due to start again


class WorkerMetrics:
    """A Prometheus collector: the workers' metrics, read at scrape time, with a ``worker`` label on every series."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls

    def collect(self):
        families: dict[str, Metric] = {}
        up = 0
        for index, url in enumerate(self.urls):
            try:
                with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as reply:
                    text = reply.read().decode("utf-8")
            except OSError:  # starting, restarting or stuck: its series are left out of this scrape, up says so
                continue
            up += 1
            for family in text_string_to_metric_families(text):
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                for sample in family.samples:
                    merged.add_sample(sample.name, {**sample.labels, "worker": str(index)}, sample.value, sample.timestamp,
                                      sample.exemplar)
        yield from families.values()
        workers = GaugeMetricFamily("reranker_gateway_workers_up", "Gateway worker processes that answered this scrape")
        workers.add_metric([], up)
        yield workers


def serve_workers(settings: Settings, argv: list[str]) -> int:
    """Run ``worker_count(settings)`` gateways on ``settings``' ports until SIGTERM or SIGINT; ``argv``: this
    process's flags, given to each worker with its own. Returns the exit status."""
    count = worker_count(settings)
    ports = {"listen": _fixed(settings.listen), "http_listen": _fixed(settings.http_listen)}
    workers = [_Worker(k, free_port()) for k in range(count)]

    def command(worker: _Worker) -> list[str]:
        flags = ["--workers", "1", "--reuse-port", "true", "--listen", ports["listen"], "--http-listen", ports["http_listen"],
                 "--metrics-listen", f"127.0.0.1:{worker.metrics_port}"]
        return [sys.executable, "-m", "ara_reranker_server.gateway", *argv, *flags]

    metrics_server = None
    if settings.metrics_listen:
        registry = CollectorRegistry()
        registry.register(WorkerMetrics([f"http://127.0.0.1:{w.metrics_port}/metrics" for w in workers]))
        metrics_server = serve_metrics(settings.metrics_listen, registry)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    log.info("gateway: %d workers on %s (HTTP %s)", count, ports["listen"], ports["http_listen"] or "off")
    try:
        for worker in workers:
            _start(worker, command(worker))
        while not stopping.wait(0.2):
            for worker in workers:
                if worker.process is not None and worker.process.poll() is not None:
                    _exited(worker)
                if worker.restart_at is not None and time.monotonic() >= worker.restart_at:
                    worker.restart_at = None
                    _start(worker, command(worker))
    finally:
        _stop_all(workers, settings.drain_s + settings.grace_period_s + 10.0)
        if metrics_server is not None:
            metrics_server.shutdown()
    return 0


def _fixed(address: str) -> str:
    """``address`` with a port every worker can share: an empty address stays empty; port 0 becomes a free one."""
    if not address:
        return address
    host, _, port = address.rpartition(":")
    return f"{host}:{free_port(host or '0.0.0.0') if port == '0' else port}"


def _start(worker: _Worker, command: list[str]) -> None:
    worker.process = subprocess.Popen(command)
    worker.started = time.monotonic()
    log.info("gateway worker %d started (pid %d)", worker.index, worker.process.pid)


def _exited(worker: _Worker) -> None:
    """Schedule an exited worker's restart, after a backoff that grows while it keeps exiting soon after starting
    (the others are watched meanwhile)."""
    code = worker.process.returncode
    lived = time.monotonic() - worker.started
    worker.backoff_s = RESTART_BACKOFF_S[0] if lived > 60 else min(2 * worker.backoff_s, RESTART_BACKOFF_S[1])
    log.error("gateway worker %d (pid %d) exited with %s after %.0f s; starting it again in %.0f s",
              worker.index, worker.process.pid, code, lived, worker.backoff_s)
    worker.process = None
    worker.restart_at = time.monotonic() + worker.backoff_s


def _stop_all(workers: list[_Worker], grace_s: float) -> None:
    """SIGTERM to every worker (each drains and finishes its calls), SIGKILL to those still running after ``grace_s``."""
    running = [w.process for w in workers if w.process is not None and w.process.poll() is None]
    for process in running:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for process in running:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("gateway worker pid %d did not stop within %.0f s: killing it", process.pid, grace_s)
            process.kill()
            process.wait()
