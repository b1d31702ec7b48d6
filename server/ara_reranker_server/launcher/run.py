"""``make run``: tritonserver and the gateway together, in the foreground; Ctrl-C stops both
(the gateway first, so calls in flight finish, then Triton).

``--model a,b,...`` serves several models side by side (each its own Triton model, chosen per request
by name or hub id; the first is the default): ``make run MODEL=ara,bge,minilm-l6,minilm-l12`` serves the
four models of ARA-Reranker-V1's card, ``make run MODEL=tiny,bert-tiny`` two offline stand-ins.

With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, both trace (OpenTelemetry, OTLP/HTTP to that endpoint): the gateway
reads the OTEL_* variables itself, Triton gets them as ``--trace-config`` flags (triton_launcher.trace_config).

Triton runs supervised (triton_supervisor), as compose's restart policy and Kubernetes' liveness probe do for the
containers: a tritonserver that exits or stops computing is started again on the same ports while the gateway keeps
running (its health NOT_SERVING meanwhile). ``make run`` ends with status 1 when Triton cannot be brought back."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from ara_reranker_model.limits import ModelLimitError, coupled_limit_problems, max_input_length
from ara_reranker_model.store import OFFLINE_MODELS, REAL_MODELS, hub_id, prepare, served_name, split_models
from ara_reranker_server import triton_config
from ara_reranker_server.launcher.gateway_process import GatewayProcess
from ara_reranker_server.launcher.triton_launcher import PROJECT_ROOT, TritonOptions, TritonServer, trace_config
from ara_reranker_server.launcher.triton_supervisor import TritonSupervisor
from ara_reranker_server.settings import Settings
from ara_reranker_server.tracing import otlp_traces_url


def model_id(model: str) -> str:
    if model in REAL_MODELS:
        return REAL_MODELS[model]
    if model in OFFLINE_MODELS:
        return f"offline-{model} (random weights, real tokenizer)"
    return model


def served_model_args(names: list[str], dirs: dict[str, Path]) -> dict[str, str]:
    """The gateway settings that serve ``names`` (as ``make run MODEL=a,b`` gives them) from ``dirs`` (served
    name -> model directory): each answers to the short name it was given and to its hub id, the first is the
    default. One model keeps the repository's Triton model (ara_reranker); several are one Triton model each."""
    if len(names) == 1:
        return {"tokenizer": str(dirs[served_name(names[0])]), "model_name": served_name(names[0]), "model_id": model_id(names[0])}
    entries = []
    for name in names:
        hub, path = hub_id(name), dirs[served_name(name)]
        entries.append(f"{served_name(name)}:{hub}={path}" if hub else f"{served_name(name)}={path}")
    return {"models": ",".join(entries)}


def limit_problems(gateway_args: dict[str, str], triton: TritonServer, model_dir: Path) -> list[str]:
    """The coupled limits (ara_reranker_model.limits.COUPLED_LIMITS) broken between the gateway's settings (its
    flags and RERANKER_* variables), the Triton configuration in use and the default model."""
    settings = Settings.from_args([part for name, value in gateway_args.items() for part in ("--" + name.replace("_", "-"), value)])
    values = {name: getattr(settings, name) for name in ("chunk_size", "max_documents", "max_inflight_pairs")}
    values.update(vars(triton_config.limits(triton_config.read(triton.config_path))))
    try:
        values["max_input_length"] = max_input_length(model_dir, settings.max_input_length)
    except ModelLimitError:
        pass  # the gateway says what is wrong with the model directory when it starts
    return coupled_limit_problems(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run Triton and the reranker gateway together.")
    parser.add_argument("--model", default="ara", help="ara | bge | minilm-l6 | minilm-l12 | tiny | small | large | "
                        "bert-tiny | bert-l6 | bert-l12 | hub id | path; several comma-separated (the first is the default)")
    parser.add_argument("--engine", default=None, help="torch | onnx (default: the model config's)")
    parser.add_argument("--listen", default="0.0.0.0:50051", help="gateway gRPC address")
    parser.add_argument("--http-listen", default="0.0.0.0:8080", help="gateway HTTP address (Cohere, Jina, TEI APIs)")
    parser.add_argument("--metrics-listen", default="0.0.0.0:9464", help="gateway /metrics address")
    parser.add_argument("--triton-grpc-port", type=int, default=8001)
    parser.add_argument("--triton-http-port", type=int, default=8000)
    parser.add_argument("--triton-metrics-port", type=int, default=8002)
    args, gateway_flags = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")  # the supervisor's

    names = split_models(args.model)
    dirs = {served_name(name): prepare(name, engine=args.engine) for name in names}
    logs = PROJECT_ROOT / "logs"
    ports = dict(grpc_port=args.triton_grpc_port, http_port=args.triton_http_port, metrics_port=args.triton_metrics_port,
                 trace_config=trace_config(os.environ))
    if len(names) == 1:  # one model: the repository as it is (Triton model ara_reranker)
        options = TritonOptions(model_dir=next(iter(dirs.values())), engine=args.engine, log_path=logs / "tritonserver.log", **ports)
    else:
        options = TritonOptions(models=dirs, engine=args.engine, log_path=logs / "tritonserver.log", **ports)
    served = served_model_args(names, dirs)
    print(f"starting tritonserver with {', '.join(map(str, dirs.values()))} (log: {options.log_path}) ...", flush=True)
    with TritonServer(options) as triton, TritonSupervisor(triton) as supervisor:
        gateway_args = {
            "listen": args.listen, "http_listen": args.http_listen, "metrics_listen": args.metrics_listen,
            "triton_endpoints": triton.grpc_url, **served,
        }
        extra = iter(gateway_flags)  # any other --flag value pairs go to the gateway as they are
        for flag in extra:
            gateway_args[flag.lstrip("-").replace("-", "_")] = next(extra)
        for problem in limit_problems(gateway_args, triton, next(iter(dirs.values()))):
            print(f"warning: {problem}", flush=True)
        gateway = GatewayProcess(gateway_args, log_path=logs / "gateway.log")
        gateway.start()
        print(
            f"\nreranker ready (models {', '.join(dirs)}; default {next(iter(dirs))})\n"
            f"  gateway gRPC      {args.listen}   (reranker.v1.Reranker, tei.v1 Rerank/Info, health, reflection)\n"
            f"  gateway HTTP      http://{args.http_listen}   (Cohere /v1/rerank /v2/rerank, Jina /v1/rerank, TEI /rerank /info)\n"
            f"  gateway metrics   http://{args.metrics_listen}/metrics\n"
            f"  triton gRPC/HTTP  {triton.grpc_url} / {triton.http_url}\n"
            f"  triton metrics    {triton.metrics_url}\n"
            f"  logs              {logs}/\n"
            f"  traces            {otlp_traces_url(os.environ) or 'off (set OTEL_EXPORTER_OTLP_ENDPOINT)'}\n"
            "Triton is restarted if it exits or stops computing; Ctrl-C stops both.",
            flush=True,
        )
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        while (not stop.is_set() and supervisor.gave_up is None
               and gateway.process is not None and gateway.process.poll() is None):
            stop.wait(0.5)
        print("stopping the gateway, then Triton ...", flush=True)
        code = gateway.stop()
        print(f"gateway exited with {code}", flush=True)
    print("tritonserver stopped", flush=True)
    if supervisor.gave_up is not None:
        print(f"error: {supervisor.gave_up}; see {options.log_path}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
