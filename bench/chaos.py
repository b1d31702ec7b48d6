"""Process faults under steady load, every call counted: ``python -m bench.chaos`` (``make chaos``, ~8 minutes).

Each scenario starts its own stack on loopback (the bundled tritonserver serving the tiny offline model, real
gateways; a single tritonserver runs under ``TritonSupervisor``, as ``make run`` runs it), drives ``--callers`` threads that rerank 8 short documents in a loop through ``RerankerClient`` with its
default retry policy and a 10 s deadline, injects one fault after a warm-up, and keeps the load on for
``--after`` seconds. For each it reports calls sent, succeeded, failed by status, the time from the fault to the
first success after the last failure (0 when no call failed), and how often the supervisor restarted tritonserver. A
call is never lost: every call started ends with a result or a status, and a run where the counts differ fails.

Scenarios:
- ``stub-kill``: SIGKILL the model's Python-backend stub (one Triton, one gateway): the gateway reloads the model.
- ``stub-stop``: SIGSTOP the stub for ``--stop-s`` seconds, then SIGCONT (one Triton, one gateway).
- ``triton-restart``: SIGKILL tritonserver (its process, as a crash ends it): the supervisor starts it again on the
  same ports (one of each).
- ``triton-stop``: SIGSTOP tritonserver for ``--stop-s`` seconds, then SIGCONT (one of each).
- ``gateway-kill``: SIGKILL one of two gateways behind one ``ipv4:`` target (one Triton).
- ``triton-kill``: SIGKILL one of two tritonservers behind one ``ipv4:`` target (one gateway).

Goals: no failed call where a second replica exists; a single-replica stack serves again within 30 s of a stub
kill; no INTERNAL for any fault. Writes ``bench/results/chaos-<timestamp>.json``; ``make docs`` puts the table in
docs/architecture.md.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

from ara_reranker_client import RerankerClient, RerankerError
from ara_reranker_model.store import prepare
from ara_reranker_server.launcher.gateway_process import GatewayProcess
from ara_reranker_server.launcher.triton_launcher import TritonOptions, TritonServer, free_port
from ara_reranker_server.launcher.triton_supervisor import TritonSupervisor
from bench.run import machine_info, write_result
from tools.arabic_text import QUERIES, SENTENCES

SCENARIOS = ("stub-kill", "stub-stop", "triton-restart", "triton-stop", "gateway-kill", "triton-kill")
DOCUMENTS = SENTENCES[:8]


class Load:
    """``callers`` threads calling until stopped; every call's outcome and end time recorded."""

    def __init__(self, target: str, callers: int) -> None:
        self.target, self.callers = target, callers
        self.outcomes: list[tuple[float, str]] = []  # (time.monotonic() at the end, status name)
        self.started = 0  # calls begun; each must end in ``outcomes``
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run) for _ in range(callers)]

    def _run(self) -> None:
        with RerankerClient(self.target, timeout=10) as client:
            while not self._stop.is_set():
                with self._lock:
                    self.started += 1
                try:
                    client.rerank(QUERIES[0], DOCUMENTS)
                    status = "OK"
                except RerankerError as exc:
                    status = exc.code.name
                except Exception as exc:  # anything else is counted too, under its type: no call goes unaccounted
                    status = type(exc).__name__
                with self._lock:
                    self.outcomes.append((time.monotonic(), status))

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
        if any(thread.is_alive() for thread in self._threads) or self.started != len(self.outcomes):
            raise RuntimeError(f"calls unaccounted for: {self.started} started, {len(self.outcomes)} ended")

    def wait_ok(self, count: int, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while sum(1 for _, s in self.outcomes if s == "OK") < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {count} calls succeeded in {timeout_s:.0f}s")
            time.sleep(0.05)

    def figures(self, fault_at: float) -> dict:
        statuses = Counter(status for _, status in self.outcomes)
        after = sorted(self.outcomes)
        failed_after = [t for t, s in after if s != "OK" and t >= fault_at]
        recovered = None
        if failed_after:
            first_ok = next((t for t, s in after if s == "OK" and t > failed_after[-1]), None)
            recovered = round(first_ok - fault_at, 2) if first_ok is not None else None
        return {"sent": len(self.outcomes), "succeeded": statuses.pop("OK", 0), "failed": dict(statuses),
                "serving_again_s": 0.0 if not failed_after else recovered}


def triton(model_dir: Path, logs: Path, name: str, **options) -> TritonServer:
    return TritonServer(TritonOptions(model_dir=model_dir, log_path=logs / f"{name}.log", **options))


def gateway(endpoints: str, model_dir: Path, logs: Path, name: str) -> GatewayProcess:
    args = {"triton_endpoints": endpoints, "tokenizer": str(model_dir), "health_interval_s": "0.5", "score_cache_mb": "0"}
    return GatewayProcess(args, log_path=logs / f"{name}.log")


def run(scenario: str, model_dir: Path, logs: Path, callers: int, warmup: int, after_s: float, stop_s: float) -> dict:
    with contextlib.ExitStack() as stack:
        supervisor = None
        if scenario == "triton-kill":
            port = free_port()
            servers = [stack.enter_context(triton(model_dir, logs, f"triton-{h}", host=h, grpc_port=port))
                       for h in ("127.0.0.1", "127.0.0.2")]
            gateways = [stack.enter_context(gateway(f"ipv4:127.0.0.1:{port},127.0.0.2:{port}", model_dir, logs, "gateway"))]
        else:  # one tritonserver, supervised as make run supervises it
            servers = [stack.enter_context(triton(model_dir, logs, "triton"))]
            supervisor = stack.enter_context(TritonSupervisor(servers[0]))
            count = 2 if scenario == "gateway-kill" else 1
            gateways = [stack.enter_context(gateway(servers[0].grpc_url, model_dir, logs, f"gateway-{i}")) for i in range(count)]
        target = gateways[0].target if len(gateways) == 1 else "ipv4:" + ",".join(g.target for g in gateways)
        with Load(target, callers) as load:
            load.wait_ok(warmup)
            fault_at = time.monotonic()
            if scenario == "stub-kill":  # every instance's stub: the model's processes, as an OOM kill may
                for pid in servers[0].stub_pids():
                    os.kill(pid, signal.SIGKILL)
            elif scenario in ("stub-stop", "triton-stop"):
                pids = servers[0].stub_pids() if scenario == "stub-stop" else [servers[0].process.pid]
                for pid in pids:
                    os.kill(pid, signal.SIGSTOP)
                time.sleep(stop_s)
                for pid in pids:
                    os.kill(pid, signal.SIGCONT)
            elif scenario == "triton-restart":
                os.kill(servers[0].process.pid, signal.SIGKILL)
            elif scenario == "gateway-kill":
                gateways[0].process.kill()
            elif scenario == "triton-kill":
                servers[0].kill()
            time.sleep(after_s)
        figures = load.figures(fault_at)
        figures["triton_restarts"] = None if supervisor is None else len(supervisor.restarts)
        return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--callers", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=40, help="successful calls before the fault")
    parser.add_argument("--after", type=float, default=45.0,
                        help="seconds of load after the fault (enough for a tritonserver restart on a busy CPU)")
    parser.add_argument("--stop-s", type=float, default=5.0, help="how long stub-stop and triton-stop keep the process stopped")
    parser.add_argument("--out-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")  # the supervisor's
    model_dir = prepare("tiny")
    logs = Path(os.environ.get("TMPDIR", "/tmp")) / f"chaos-{os.getpid()}"
    logs.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine_info(), "model": "tiny", "callers": args.callers, "after_s": args.after,
              "stop_s": args.stop_s, "logs": str(logs), "scenarios": {}}
    for scenario in args.scenarios.split(","):
        figures = run(scenario, model_dir, logs, args.callers, args.warmup, args.after, args.stop_s)
        result["scenarios"][scenario] = figures
        print(f"{scenario:15s} {figures}", flush=True)
    print(markdown(result))
    write_result("chaos", result, *([args.out_dir] if args.out_dir else []))
    return 0


def markdown(result: dict) -> str:
    rows = ["| fault | calls | succeeded | failed (by status) | serving again after | tritonserver restarts |",
            "|---|---:|---:|---|---:|---:|"]
    for name, f in result["scenarios"].items():
        failed = ", ".join(f"{code} {n}" for code, n in sorted(f["failed"].items())) or "none"
        again = "no failure" if f["serving_again_s"] == 0.0 else (
            "not within the run" if f["serving_again_s"] is None else f"{f['serving_again_s']} s")
        restarts = f.get("triton_restarts")
        rows.append(f"| {name} | {f['sent']} | {f['succeeded']} | {failed} | {again} | "
                    f"{'unsupervised' if restarts is None else restarts} |")
    return "\n".join(rows)


if __name__ == "__main__":
    raise SystemExit(main())
