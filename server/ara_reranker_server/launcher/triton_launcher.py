"""Start and stop a real tritonserver with this project's model repository.

Prefers a ``tritonserver`` on PATH (NVIDIA's container on GPU nodes) and falls back to the binary
bundled in the ``nvidia-pytriton`` wheel (Triton 2.51, runs on CPU). Used by ``make run``, the
benchmarks and the test fixtures: ``with TritonServer(TritonOptions(model_dir=...)) as triton: ...``.

Two ways to say what it serves:

* ``model_dir=``: the template repository (``model_repository/``) in place, one Triton model named
  ``ara_reranker`` whose weights directory reaches model.py through env ``ARA_RERANKER_MODEL_DIR``
  (what the deploy manifests and dashboards know).
* ``models={"tiny": path, "bert-tiny": path}``: several rerankers side by side. A repository is generated
  in the server's temporary directory with one Triton model per served name, named after it, each with
  the template's configurations (``name`` and the ``model_dir`` parameter set to that model's) and its
  version directory ``1/`` linked to the template's code. Each has its own dynamic batcher, queue and
  instance group, as Triton's repository conventions have it.

An ``engine=`` choice is written into the served configurations (a generated repository, as for
``models=``, one model named ``ara_reranker`` for ``model_dir=``): the gateway's Info reads the engine and
dtype from Triton's configuration of the model, so the configuration must be what runs.

``TritonServer.model_names`` lists the Triton model names either way.

``python -m ara_reranker_server.launcher.triton_launcher --model tiny[,bert-tiny]`` runs one in the foreground until Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from ara_reranker_model.layout import MODEL_DIR_ENV, MODEL_REPOSITORY, PROJECT_ROOT, TRITON_MODEL
from ara_reranker_server import triton_config
from ara_reranker_server.launcher.child_process import ChildExited, ChildProcess
from ara_reranker_server.ports import free_port
from ara_reranker_server.tracing import otlp_traces_url

__all__ = ["MODEL_NAME", "MODEL_REPOSITORY", "PROJECT_ROOT", "TritonOptions", "TritonServer", "TritonStartError", "free_port",
           "generate_repository", "trace_config", "TRITON_SERVICE_NAME"]

MODEL_NAME = TRITON_MODEL  # the template model, and the one model of the model_dir= path
# The service name of Triton's spans (the gateway's: OTEL_SERVICE_NAME, default tracing.DEFAULT_SERVICE_NAME).
TRITON_SERVICE_NAME = "ara-reranker-triton"
# A served name becomes a directory and a Triton model name: no separators, nothing hidden.
MODEL_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def trace_config(environ: Mapping[str, str]) -> tuple[str, ...]:
    """Triton's ``--trace-config`` values that export its spans where the gateway's go (the OpenTelemetry
    variables, tracing.otlp_traces_url), or none when tracing is off.

    ``rate=0``: Triton traces only the requests that carry a trace context, and every one of those whatever its
    rate (Triton's trace documentation); the gateway passes a context on only for the calls its sampler keeps
    (OTEL_TRACES_SAMPLER / _ARG), so that one decision samples both processes and no Triton trace is orphaned.
    Triton's service name is ``ara-reranker-triton`` (OTEL_SERVICE_NAME names the gateway); the other
    OTEL_RESOURCE_ATTRIBUTES and OTEL_BSP_SCHEDULE_DELAY apply to it too."""
    url = otlp_traces_url(environ)
    if url is None:
        return ()
    config = ["mode=opentelemetry", f"opentelemetry,url={url}", "rate=0", "count=-1", "level=TIMESTAMPS"]
    for pair in environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, sep, value = pair.partition("=")
        if sep and key.strip() and key.strip() != "service.name":
            config.append(f"opentelemetry,resource={key.strip()}={value.strip()}")
    config.append(f"opentelemetry,resource=service.name={TRITON_SERVICE_NAME}")
    if environ.get("OTEL_BSP_SCHEDULE_DELAY"):
        config.append(f"opentelemetry,bsp_schedule_delay={environ['OTEL_BSP_SCHEDULE_DELAY']}")
    return tuple(config)


class TritonStartError(RuntimeError):
    """tritonserver exited or did not get the model ready in time; the message holds its log tail."""



def has_gpu() -> bool:
    """Whether a CUDA device is visible (decides the default model configuration)."""
    return shutil.which("nvidia-smi") is not None and subprocess.run(
        ["nvidia-smi", "-L"], capture_output=True, check=False
    ).returncode == 0


@dataclass
class TritonOptions:
    """How to run tritonserver. Ports of 0 are replaced by free ones at start."""

    model_dir: Path | None = None  # one model, "ara_reranker": exported to model.py as ARA_RERANKER_MODEL_DIR
    # Several models: served name -> weights directory, one Triton model each (named so); excludes model_dir.
    models: Mapping[str, Path] | None = None
    engine: str | None = None  # written into the served configs' ``engine`` parameter; None keeps the config's
    config_name: str | None = None  # None: "cpu" without a GPU, config.pbtxt with one
    host: str = "127.0.0.1"  # loopback by default: only the gateway should reach Triton
    grpc_port: int = 0
    http_port: int = 0
    metrics_port: int = 0
    model_repository: Path = MODEL_REPOSITORY  # with models=, the template: its ara_reranker/ is copied per model
    log_path: Path | None = None  # default: a file in a temporary directory
    startup_timeout_s: float = 180.0
    extra_env: dict[str, str] = field(default_factory=dict)
    verbose: bool = False
    # "explicit": the models are loaded at start and can be reloaded through Triton's repository API, which the
    # gateway does when a model's instance dies (its Python-backend stub killed, e.g. by the OOM killer).
    model_control: str = "explicit"
    # Triton's --trace-config values (``trace_config(os.environ)``: OpenTelemetry, as the gateway); empty: no tracing.
    trace_config: tuple[str, ...] = ()


class TritonServer:
    """A tritonserver process; a context manager that starts it and waits until the model is ready."""

    def __init__(self, options: TritonOptions) -> None:
        if options.models is not None and options.model_dir is not None:
            raise ValueError("TritonOptions: give model_dir (one model) or models (several), not both")
        if options.models is not None and not options.models:
            raise ValueError("TritonOptions.models is empty")
        for name in options.models or ():
            if not MODEL_NAME_PATTERN.fullmatch(name):
                raise ValueError(f"model name {name!r} cannot name a Triton model (letters, digits, '.', '_', '-')")
        self.options = options
        self._tmp = tempfile.TemporaryDirectory(prefix="tritonserver-")
        self.log_path = options.log_path or Path(self._tmp.name) / "tritonserver.log"
        # Its own process group, so that stop() also reaches the Python backend stubs.
        self._child = ChildProcess("tritonserver", self.log_path, own_group=True)
        self._config_name: str | None = None  # decided once: has_gpu() runs nvidia-smi

    @property
    def process(self) -> subprocess.Popen | None:
        """The tritonserver process while it runs (None before start and after stop)."""
        return self._child.popen

    @property
    def model_names(self) -> list[str]:
        """The Triton model names served, in the order given: the served names, or ``["ara_reranker"]``."""
        return list(self.options.models) if self.options.models is not None else [MODEL_NAME]

    @property
    def grpc_url(self) -> str:
        return f"{self.options.host}:{self.options.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"{self.options.host}:{self.options.http_port}"

    @property
    def config_name(self) -> str:
        """The model configuration Triton is told to use: "cpu" (configs/cpu.pbtxt) without a GPU, "" (config.pbtxt) with one."""
        if self.options.config_name is not None:
            return self.options.config_name
        if self._config_name is None:
            self._config_name = "" if has_gpu() else "cpu"
        return self._config_name

    @property
    def config_path(self) -> Path:
        """The template's configuration file that ``config_name`` selects (each served model has its copy)."""
        model = self.options.model_repository / MODEL_NAME
        return model / "configs" / f"{self.config_name}.pbtxt" if self.config_name else model / "config.pbtxt"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.options.host}:{self.options.metrics_port}/metrics"

    def __enter__(self) -> "TritonServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        """Launch tritonserver and block until the model is READY (TritonStartError otherwise)."""
        self.launch()
        self.wait_ready(self.options.startup_timeout_s)

    def launch(self) -> None:
        """Start the tritonserver process without waiting; free ports are picked the first time, and a later launch
        (a restart) keeps them, so that the gateway finds the new server where the old one was."""
        opts = self.options
        for name in ("grpc_port", "http_port", "metrics_port"):
            if not getattr(opts, name):
                setattr(opts, name, free_port(opts.host))
        command, env = self._command()
        self._child.start(command, env=env)

    @property
    def running(self) -> bool:
        """Whether the tritonserver process was launched and has not exited."""
        return self._child.running

    def _command(self) -> tuple[list[str], dict[str, str]]:
        opts = self.options
        env = dict(os.environ, **opts.extra_env)
        repository = opts.model_repository
        if opts.models is not None or opts.engine:
            # A copy whose configs say what runs (Info reads the engine from Triton's config of the model).
            models = opts.models if opts.models is not None else {MODEL_NAME: opts.model_dir}
            repository = generate_repository(Path(self._tmp.name) / "model_repository", models, opts.model_repository,
                                             engine=opts.engine)
            env.pop(MODEL_DIR_ENV, None)  # it would override every model's own model_dir parameter
        elif opts.model_dir is not None:
            env[MODEL_DIR_ENV] = str(Path(opts.model_dir).resolve())
        config_name = self.config_name
        command = [
            "--model-repository", str(repository),
            "--grpc-address", opts.host, "--grpc-port", str(opts.grpc_port),
            "--http-address", opts.host, "--http-port", str(opts.http_port),
            "--metrics-address", opts.host, "--metrics-port", str(opts.metrics_port),
            "--allow-metrics", "true", "--allow-gpu-metrics", "true",
            "--exit-timeout-secs", "10",
            "--log-verbose", "1" if opts.verbose else "0",
            "--model-control-mode", opts.model_control,
        ]
        if opts.model_control == "explicit":
            command += [part for name in self.model_names for part in ("--load-model", name)]
        if config_name:
            command += ["--model-config-name", config_name]
        command += [part for value in opts.trace_config for part in ("--trace-config", value)]
        system = shutil.which("tritonserver")
        if system:
            return [system, *command], env
        binary, backends, libs = self._bundled()
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(libs), env.get("LD_LIBRARY_PATH", "")) if p)
        # The stub's embedded interpreter imports ara_reranker_model, torch and transformers from this environment
        # (where the project is installed); as in the Triton image, model.py honours PYTHONPATH.
        paths = (sysconfig.get_paths()["purelib"], env.get("PYTHONPATH", ""))
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        return [str(binary), *command, "--backend-directory", str(backends)], env

    def _bundled(self) -> tuple[Path, Path, Path]:
        """The tritonserver of nvidia-pytriton, with a backend directory for this Python's stub."""
        # Found, not imported: pytriton's __init__ imports its client (gevent ...), which only the binary's user lacks.
        spec = importlib.util.find_spec("pytriton")
        if spec is None or spec.origin is None:
            raise TritonStartError("no tritonserver on PATH and nvidia-pytriton is not installed")
        root = Path(spec.origin).parent / "tritonserver"
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not stub.exists():
            raise TritonStartError(f"nvidia-pytriton ships no Python backend stub for Python {version}")
        backends = Path(self._tmp.name) / "backends"
        python = backends / "python"
        python.mkdir(parents=True, exist_ok=True)
        for source in (root / "backends/python/libtriton_python.so", root / "backends/python/triton_python_backend_utils.py", stub):
            target = python / source.name
            if not target.exists():
                target.symlink_to(source)
        return root / "bin/tritonserver", backends, root.parent.parent / "nvidia_pytriton.libs"

    def is_ready(self, model: str | None = None) -> bool:
        """Whether ``model`` (default: every model served) answers READY on Triton's HTTP endpoint."""
        if model is None:
            return not self._not_ready()
        url = f"http://{self.http_url}/v2/models/{model}/ready"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _not_ready(self) -> list[str]:
        return [name for name in self.model_names if not self.is_ready(name)]

    def wait_ready(self, timeout_s: float) -> None:
        """Block until every model is READY; TritonStartError (with the log's tail) if Triton exits first
        or the time runs out."""
        try:
            self._child.wait_ready(self.is_ready, timeout_s)
        except ChildExited as exc:
            raise TritonStartError(str(exc)) from None
        except TimeoutError:
            waiting = ", ".join(self._not_ready())
            self.stop()
            raise TritonStartError(f"model(s) {waiting} not ready after {timeout_s:.0f}s:\n{self.log_tail()}") from None

    def log_tail(self, lines: int = 40) -> str:
        return self._child.log_tail(lines)

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM (Triton unloads models and exits), then SIGKILL the group, even when tritonserver
        itself already died: its Python-backend stubs would otherwise live on, holding shared memory."""
        self._child.stop(timeout_s)

    def kill(self) -> None:
        """SIGKILL the whole group at once (fault-injection tests)."""
        self._child.kill()

    def stub_pids(self) -> list[int]:
        """The live Python-backend stub processes of this server, one per model instance (what the OOM killer picks;
        fault-injection tests and bench/chaos.py signal them). Read from Linux's /proc: the stubs share tritonserver's
        process group; a killed stub stays a zombie, never reaped by Triton, and is left out."""
        if self.process is None:
            return []
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat, cmdline = (entry / "stat").read_text(), (entry / "cmdline").read_bytes()
            except OSError:  # gone meanwhile
                continue
            state, _ppid, group = stat.rsplit(")", 1)[1].split()[:3]
            if state != "Z" and int(group) == self.process.pid and b"triton_python_backend_stub" in cmdline:
                pids.append(int(entry.name))
        return sorted(pids)


def generate_repository(target: Path, models: Mapping[str, Path | None], template: Path = MODEL_REPOSITORY,
                        engine: str | None = None) -> Path:
    """Write a model repository at ``target`` with one Triton model per served name of ``models``.

    Each is ``template``'s ``ara_reranker`` model: every configuration (config.pbtxt and configs/*.pbtxt)
    copied with ``name`` set to the served name, the ``model_dir`` parameter to that model's absolute
    weights directory (None: the template's, made absolute) and, if given, the ``engine`` parameter to
    ``engine``; the version directory ``1/`` a link to the template's (one copy of the code)."""
    source = template / MODEL_NAME
    target.mkdir(parents=True, exist_ok=True)
    for name, model_dir in models.items():
        model = target / name
        shutil.rmtree(model, ignore_errors=True)
        model.mkdir()
        for config in [source / "config.pbtxt", *sorted((source / "configs").glob("*.pbtxt"))]:
            destination = model / config.relative_to(source)
            destination.parent.mkdir(exist_ok=True)
            destination.write_text(_configured(config, name, model_dir, template.resolve().parent, engine))
        (model / "1").symlink_to((source / "1").resolve(), target_is_directory=True)
    return target


def _configured(config_path: Path, name: str, model_dir: Path | None, root: Path, engine: str | None = None) -> str:
    """A template configuration with its model name, ``model_dir`` parameter (None: its own, made absolute from
    ``root``, the template repository's parent, as model.py resolves it) and, if given, ``engine`` replaced."""
    config = triton_config.load(config_path)
    if "model_dir" not in config.parameters:
        raise ValueError(f"{config_path}: no model_dir parameter")
    config.name = name
    own_dir = root / config.parameters["model_dir"].string_value  # an absolute own path stays as it is
    config.parameters["model_dir"].string_value = str(Path(model_dir if model_dir is not None else own_dir).resolve())
    if engine:
        if "engine" not in config.parameters:
            raise ValueError(f"{config_path}: no engine parameter")
        config.parameters["engine"].string_value = engine
    return triton_config.dump(config)


def main(argv: list[str] | None = None) -> int:
    from ara_reranker_model.store import prepare, served_name, split_models

    parser = argparse.ArgumentParser(description="Run tritonserver with the reranker model repository.")
    parser.add_argument("--model", default="ara",
                        help="ara | bge | minilm-l6 | minilm-l12 | tiny | bert-tiny | ... | hub id | path; "
                             "comma-separated: one Triton model each, named after it")
    parser.add_argument("--engine", default=None, help="torch | onnx (default: the config's)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--config-name", default=None, help="model config name (default: cpu without a GPU)")
    args = parser.parse_args(argv)
    names = split_models(args.model)
    if len(names) == 1:
        served = {"model_dir": prepare(names[0], engine=args.engine)}
    else:
        served = {"models": {served_name(name): prepare(name, engine=args.engine) for name in names}}
    options = TritonOptions(
        **served, engine=args.engine, config_name=args.config_name, host=args.host,
        grpc_port=args.grpc_port, http_port=args.http_port, metrics_port=args.metrics_port,
        log_path=PROJECT_ROOT / "logs/tritonserver.log",
    )
    with TritonServer(options) as triton:
        print(f"tritonserver ready ({', '.join(triton.model_names)}): grpc {triton.grpc_url}, http {triton.http_url}, metrics {triton.metrics_url}; log {triton.log_path}")
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
