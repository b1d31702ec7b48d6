"""The one format every benchmark writes its result in, and the list of benchmarks (experiments).

A result is one JSON file in ``bench/results/``, named ``<kind>-<timestamp>.json`` (the main benchmark:
``<timestamp>.json`` and its copy ``latest.json``), holding::

    {"kind": "overhead",                          # which experiment (EXPERIMENTS) wrote it
     "command": "python -m bench.overhead ...",   # the exact command line that measured it
     "commit": "0746bd9",                         # git HEAD then, "+changes" when the tree was dirty
     "machine": {"cpu": ..., "cores": ..., "memory_gib": ..., "python": ..., "gpu": ..., "versions": {...}},
     "data": {...}}                               # the experiment's own figures and setup

``write`` writes it, ``read`` and ``newest`` read it back; ``EXPERIMENTS`` names each experiment's kind and
the command that reproduces it, from which ``make docs`` writes the Reproduce table of docs/benchmarks.md.
Results written before this format were converted to it; their ``command`` is ``null`` where the run did not
record one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from bench.markdown import table

__all__ = ["EXPERIMENTS", "PROJECT_ROOT", "RESULTS", "Experiment", "Result", "add_names", "command_line", "envelope", "finish", "git_commit", "machine_info", "newest", "parser", "read",
           "reproduce_table", "when", "write"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RESULTS = PROJECT_ROOT / "bench" / "results"
_STAMP = re.compile(r"-?\d{8}-\d{6}$")


@dataclass(frozen=True)
class Experiment:
    """One benchmark: the kind of result it writes and the command that reproduces it."""

    kind: str
    command: str
    notes: str = ""
    files: str = "json"  # the extensions it writes, e.g. "{json,md,png}"
    stem: str = ""  # the file name before the extension when it is not ``<kind>-<timestamp>``

    @property
    def writes(self) -> str:
        return f"`bench/results/{self.stem or self.kind + '-<timestamp>'}.{self.files}`"


# Every experiment, in the order the Reproduce table lists them.
EXPERIMENTS: tuple[Experiment, ...] = (
    Experiment("run", "make bench", "= `python -m bench.run --model small` after building Infinity's venv; "
               "`MODEL=tiny|small|large`; also copied to `latest.*`; `make bench-smoke` (= `python -m bench.run --smoke`, "
               "tiny model, seconds; CI runs it) writes the same to `bench/results/smoke/`, not committed",
               "{json,md,png}", stem="<timestamp>"),
    Experiment("workload-<name>", "python -m bench.run --workload uniform-128|uniform-512|long|mixed --side-run ...",
               "in `make bench`", "{json,md,png}"),
    Experiment("intake", "python -m bench.intake"),
    Experiment("default-price", "python -m bench.default_price",
               "the fair CPU default against one instance and the in-process limit, taking turns; `--workloads`, `--rounds`"),
    Experiment("side-by-side", "python -m bench.side_by_side"),
    Experiment("gateway-capacity", "python -m bench.gateway_capacity",
               "`--concurrency`, `--seconds`, `--gateway-core`, `--other-cores`, `--workers`, `--triton-model tiny|null`"),
    Experiment("windows", "python -m bench.windows", "60 s per truncation mode by default: `--seconds`"),
    Experiment("overhead", "python -m bench.overhead"),
    Experiment("tracing-overhead", "python -m bench.overhead --tracing"),
    Experiment("profile", "python -m bench.profile",
               "`--docs`, `--callers`, `--triton-model null`, `--gil`, `--seconds`; py-spy on the gateway and the model's "
               "process; `--stacks DIR`: the raw stacks"),
    Experiment("big-message", "python -m bench.big_message"),
    Experiment("queued-wait", "python -m bench.queued_wait", "[api.md](api.md#priorities)"),
    Experiment("chaos", "python -m bench.chaos", "`make chaos`; the table in [architecture.md](architecture.md)"),
    Experiment("http-overhead", "python -m bench.http_overhead"),
    Experiment("cache", "python -m bench.cache"),
    Experiment("batch-memory", "python -m bench.batch_memory",
               "`--models`, `--shapes`, `--triton`; [configuration.md](configuration.md#memory-max_batch_tokens-and-forward_workers)"),
    Experiment("precision", "python -m bench.precision --model small", "[precision.md](precision.md)"),
    Experiment("llm-rerankers", "python -m bench.llm_rerankers",
               "`--models tiny,qwen3-tiny,small`, `--limit-only qwen3-l28`, `--concurrency`, `--duration`, `--docs`"),
    Experiment("gpu", "bash bench/gpu.sh", "on a GPU node; [gpu.md](gpu.md)", "{json,md}"),
    Experiment("gpu-dryrun-cpu", "make bench-gpu-dry-run", "= `python -m bench.gpu --dry-run`: the GPU measurement on "
               "the CPU with the tiny model, not GPU figures", "{json,md}"),
)


@dataclass(frozen=True)
class Result:
    """One result file, read back."""

    kind: str
    command: str | None
    commit: str | None
    machine: dict
    data: dict
    path: Path = field(compare=False)

    @property
    def file(self) -> str:
        """The file's path from the project root, as the docs cite it."""
        return self.path.relative_to(PROJECT_ROOT).as_posix() if self.path.is_relative_to(PROJECT_ROOT) else str(self.path)

    @property
    def stamp(self) -> str:
        """``20261129-025800`` from the file's name (``latest.json``: from the run's own record)."""
        found = re.search(r"\d{8}-\d{6}", self.path.stem)
        return found.group(0) if found else self.data.get("meta", {}).get("timestamp", "")


def git_commit() -> str:
    """HEAD's short hash, with ``+changes`` when tracked files differ from it."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                           capture_output=True, text=True).stdout.strip()
    return head.stdout.strip() + ("+changes" if dirty else "")


def package_versions() -> dict:
    """The versions of the packages whose speed the figures depend on, those installed."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "transformers", "onnxruntime", "tokenizers", "sentence-transformers", "nvidia-pytriton", "grpcio"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def machine_info() -> dict:
    """The machine a result was measured on: CPU model, cores, memory, Python, GPU and package versions."""
    import psutil

    cpu = platform.processor() or "unknown"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "gpu": "none", "versions": package_versions()}


def command_line(module: str, argv: list[str] | None = None) -> str:
    """``python -m <module> <arguments>``: the command line a result records (``argv`` None: this process's)."""
    return " ".join(["python -m " + module, shlex.join(argv if argv is not None else sys.argv[1:])]).strip()


def envelope(kind: str, command: str, data: dict, machine: dict | None = None) -> dict:
    """The JSON object of a result (what ``write`` writes), for writers that name their files themselves."""
    return {"kind": kind, "command": command, "commit": git_commit(), "machine": machine or machine_info(), "data": data}


def parser(doc: str | None, model: str | None = None, engine: str | None = None) -> argparse.ArgumentParser:
    """An experiment's command line: ``doc`` (its module's docstring) as the help, and the options every experiment
    takes: ``--no-write`` (print only) and ``--out-dir``; given their defaults, ``--model`` (the offline model or
    model directory it serves) and ``--engine`` (the Triton model's engine, torch or onnx)."""
    made = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    made.add_argument("--no-write", action="store_true", help="print only, write no result (tests)")
    made.add_argument("--out-dir", type=Path, default=None, help="where the result goes (default bench/results)")
    if model is not None:
        made.add_argument("--model", default=model, help=f"offline model (tiny, small, large) or model directory (default {model})")
    if engine is not None:
        made.add_argument("--engine", default=engine, choices=("torch", "onnx"), help=f"the model's engine (default {engine})")
    return made


def add_names(parser: argparse.ArgumentParser, flag: str, names: Sequence[str], what: str) -> None:
    """An option choosing some of ``names`` (``what`` they are), comma-separated, all by default; parsed to a list,
    an unknown name refused with the known ones."""
    def chosen(text: str) -> list[str]:
        picked = [name for name in text.split(",") if name]
        if unknown := [name for name in picked if name not in names]:
            raise argparse.ArgumentTypeError(f"unknown {what} {unknown}; known: {', '.join(names)}")
        return picked

    parser.add_argument(flag, type=chosen, default=list(names), help=f"{what}, comma-separated: {', '.join(names)} (default all)")


def finish(kind: str, module: str, argv: list[str] | None, args: argparse.Namespace, data: dict,
           table: Callable[[dict], str] | None = None, machine: dict | None = None) -> Path | None:
    """The end of an experiment: print ``table(data)``, then, unless ``--no-write``, write the result of ``kind``
    measured by ``python -m <module> <argv>`` to ``--out-dir``."""
    if table is not None:
        print(table(data), flush=True)
    return None if args.no_write else write(kind, command_line(module, argv), data, args.out_dir, machine)


def write(kind: str, command: str, data: dict, directory: Path | None = None, machine: dict | None = None) -> Path:
    """Write ``data`` measured by ``command`` to ``<directory>/<kind>-<timestamp>.json`` (``bench/results/`` by
    default) with the commit and the machine, and say where."""
    directory = directory or RESULTS
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(envelope(kind, command, data, machine), indent=1) + "\n")
    print(f"wrote {path.relative_to(PROJECT_ROOT) if path.is_relative_to(PROJECT_ROOT) else path}")
    return path


def read(path: Path) -> Result:
    """One result file."""
    raw = json.loads(Path(path).read_text())
    missing = {"kind", "command", "commit", "machine", "data"} - raw.keys()
    if missing:
        raise ValueError(f"{path} is not a result (lacks {sorted(missing)}); see bench/results.py")
    return Result(raw["kind"], raw["command"], raw["commit"], raw["machine"], raw["data"], Path(path))


def newest(kind: str | None = None, directory: Path | None = None) -> Result:
    """The newest result of ``kind`` (``intake``, ``workload-long``, ...) by the timestamp in its name;
    ``None``: the main benchmark's ``latest.json``."""
    directory = directory or RESULTS
    if kind is None:
        return read(directory / "latest.json")
    found = sorted(p for p in directory.glob(f"{kind}-*.json") if _STAMP.sub("", p.stem) == kind)
    if not found:
        raise FileNotFoundError(f"no {kind}-<timestamp>.json in {directory}")
    return read(found[-1])


def when(stamp: str) -> str:
    """``20261129-025800`` -> ``2026-11-29 02:58``."""
    return f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]} {stamp[9:11]}:{stamp[11:13]}" if stamp else "?"


def _newest_of(experiment: Experiment, directory: Path) -> list[Result]:
    if experiment.kind == "run":
        stamped = sorted(p for p in directory.glob("*.json") if re.fullmatch(r"\d{8}-\d{6}", p.stem))
        return [read(stamped[-1])] if stamped else []
    if "<name>" in experiment.kind:
        prefix = experiment.kind.split("<name>")[0]
        kinds = sorted({_STAMP.sub("", p.stem) for p in directory.glob(f"{prefix}*.json")})
        return [newest(kind, directory) for kind in kinds]
    try:
        return [newest(experiment.kind, directory)]
    except FileNotFoundError:
        return []


def reproduce_table(directory: Path | None = None) -> str:
    """docs/benchmarks.md's Reproduce table: each experiment's command, what it writes and its newest committed
    result with the command line, commit and date it was measured with."""
    directory = directory or RESULTS
    rows = []
    for experiment in EXPERIMENTS:
        notes = f" ({experiment.notes})" if experiment.notes else ""
        found = _newest_of(experiment, directory)
        newest_cells = "<br>".join(
            f"`{r.file}`: {f'`{r.command}`' if r.command else 'command not recorded'}, {r.commit or 'commit not recorded'}, "
            f"{when(r.stamp)}" for r in found) or "none committed"
        cells = (f"`{experiment.command}`{notes}", experiment.writes, newest_cells)
        rows.append([cell.replace("|", "\\|") for cell in cells])  # a | inside a cell would end it
    return "\n".join(table(["command", "what it writes", "newest result: file, measured by, commit, when"], rows))
