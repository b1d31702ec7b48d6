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

import contextlib
import logging
import os
import signal
import time
from collections import Counter
from pathlib import Path

from ara_reranker_client import RerankerClient, RerankerError
from ara_reranker_model.store import prepare
from ara_reranker_server.launcher.gateway_process import GatewayProcess
from ara_reranker_server.launcher.triton_launcher import TritonOptions, TritonServer, free_port
from ara_reranker_server.launcher.triton_supervisor import TritonSupervisor
from bench import results
from bench.loadgen import ClosedLoop, Outcome
from bench.markdown import table
from tools.arabic_text import QUERIES, SENTENCES

SCENARIOS = ("stub-kill", "stub-stop", "triton-restart", "triton-stop", "gateway-kill", "triton-kill")
DOCUMENTS = SENTENCES[:8]


def status(outcome: Outcome) -> str:
    """A call's status: OK, the gRPC code the client raised, or any other error's type (no call goes unaccounted)."""
    if outcome.ok:
        return "OK"
    return outcome.error.code.name if isinstance(outcome.error, RerankerError) else type(outcome.error).__name__


def figures(outcomes: list[Outcome], fault_at: float) -> dict:
    """Calls sent, succeeded and failed (by status), and how long after the fault the service answered again."""
    ended = sorted((o.ended, status(o)) for o in outcomes)
    statuses = Counter(s for _, s in ended)
    failed_after = [t for t, s in ended if s != "OK" and t >= fault_at]
    recovered = None
    if failed_after:
        first_ok = next((t for t, s in ended if s == "OK" and t > failed_after[-1]), None)
        recovered = round(first_ok - fault_at, 2) if first_ok is not None else None
    return {"sent": len(ended), "succeeded": statuses.pop("OK", 0), "failed": dict(statuses),
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
        calls = ClosedLoop(lambda client, _: client.rerank(QUERIES[0], DOCUMENTS), callers,
                           session=lambda: RerankerClient(target, timeout=10))
        with calls:
            calls.wait_ended(warmup, 60.0, ok_only=True)
            fault_at = time.perf_counter()
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
        return figures(calls.outcomes, fault_at) | {"triton_restarts": None if supervisor is None else len(supervisor.restarts)}


def main(argv: list[str] | None = None) -> int:
    parser = results.parser(__doc__)
    results.add_names(parser, "--scenarios", SCENARIOS, "faults")
    parser.add_argument("--callers", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=40, help="successful calls before the fault")
    parser.add_argument("--after", type=float, default=45.0,
                        help="seconds of load after the fault (enough for a tritonserver restart on a busy CPU)")
    parser.add_argument("--stop-s", type=float, default=5.0, help="how long stub-stop and triton-stop keep the process stopped")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")  # the supervisor's
    model_dir = prepare("tiny")
    logs = Path(os.environ.get("TMPDIR", "/tmp")) / f"chaos-{os.getpid()}"
    logs.mkdir(parents=True, exist_ok=True)
    result = {"model": "tiny", "callers": args.callers, "after_s": args.after,
              "stop_s": args.stop_s, "logs": str(logs), "scenarios": {}}
    for scenario in args.scenarios:
        found = run(scenario, model_dir, logs, args.callers, args.warmup, args.after, args.stop_s)
        result["scenarios"][scenario] = found
        print(f"{scenario:15s} {found}", flush=True)
    results.finish("chaos", "bench.chaos", argv, args, result, markdown)
    return 0


def markdown(result: dict) -> str:
    rows = []
    for name, f in result["scenarios"].items():
        failed = ", ".join(f"{code} {n}" for code, n in sorted(f["failed"].items())) or "none"
        again = "no failure" if f["serving_again_s"] == 0.0 else (
            "not within the run" if f["serving_again_s"] is None else f"{f['serving_again_s']} s")
        restarts = f.get("triton_restarts")
        rows.append((name, f["sent"], f["succeeded"], failed, again, "unsupervised" if restarts is None else restarts))
    return "\n".join(table(["fault", "calls", "succeeded", "failed (by status)", "serving again after", "tritonserver restarts"],
                           rows, "lrrlrr"))


if __name__ == "__main__":
    raise SystemExit(main())
