"""Every example in README.md and docs/*.md runs as written, against a live stack on loopback.

Every fenced block names its language. ``sh``, ``bash`` and ``python`` blocks are meant to be run, and each one
is, unless the line right before it says why it cannot run here and which test or file checks it instead::

    <!-- not run: needs a Kubernetes cluster; checked by tests/test_deploy_k8s.py -->

(``checked by`` must name a file of the repository). Other languages (``text``, ``json``, ...) show output or
data and are not run. The rules by which a block is run, so that it runs *as written*:

- **The stack.** A page's blocks run against ``make run MODEL=tiny`` unless a block says ``make run ...``: that
  line is not executed; the test starts that stack instead (the gateway with the served names, flags and
  ``RERANKER_*`` variables ``make run`` would give it, ``server/ara_reranker_server/launcher/run.py``'s
  ``served_model_args``, in front of the session tritonserver serving the tiny weights, so ``MODEL=ara`` is
  served on the tiny weights: names, not weights, are what the examples show) and the following blocks of the
  page run against it. ``make -n run`` must show every ``VAR=value`` of the line in the command it runs: a
  variable the Makefile does not pass on fails.
- **Ports.** The stack listens on free ports: ``localhost``/``127.0.0.1``/``0.0.0.0`` with ``:50051`` (gRPC),
  ``:8080`` (HTTP) and ``:9464`` (metrics) in a block's text become the stack's addresses, and
  ``RERANKER_TARGET`` (which the ``reranker`` CLI and ``make eval`` read for their default target) is the
  stack's gRPC address.
- **The checkout.** Blocks run in a scratch directory that links every top-level entry of the repository
  (``.venv`` is the virtualenv running the tests), so ``.venv/bin/...``, ``make ...`` and relative paths work,
  and files an example writes land in the scratch directory. ``make`` is run with ``-o .venv/.installed`` (the
  virtualenv is not rebuilt). ``curl`` fails on an HTTP error (``--fail-with-body``), as a script would want it.
  Where grpcurl is not installed, ``tests/docs_grpcurl.py`` makes the same call through server reflection.
- Shell blocks run with ``bash -e -o pipefail``; Python blocks with the virtualenv's python. A block that
  exits non-zero fails the page, naming the block's line.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from ara_reranker_model.store import served_name
from ara_reranker_server.launcher.gateway_process import GatewayProcess
from ara_reranker_server.launcher.run import served_model_args

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = {"sh", "bash", "python"}
SHOWN = {"text", "json", "yaml", "proto"}  # output, data, diagrams: shown, never run
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[^\s`]*)[^\n]*\n(?P<code>.*?)^(?P=indent)```[ \t]*$", re.S | re.M)
NOT_RUN = re.compile(r"^\s*<!-- not run: (?P<why>.+?); checked by (?P<how>.+?) -->\s*$")
MAKE_RUN = re.compile(r"^(?P<env>(?:[A-Z][A-Z0-9_]*=\S+\s+)*)make run(?P<vars>(?:\s+[A-Z][A-Z0-9_]*=\S+)*)\s*(?:#.*)?$")
ADDRESS = re.compile(r"\b(?:localhost|127\.0\.0\.1|0\.0\.0\.0):(50051|8080|9464)\b")
BLOCK_TIMEOUT_S = 180


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    code: str
    marker: str | None  # the "not run" comment right before the block

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line} ({self.lang or 'no language'})"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page``, dedented, with the line of their opening fence."""
    text = page.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = [ln for ln in text[: match.start()].splitlines() if ln.strip()]
        marker = before[-1] if before and NOT_RUN.match(before[-1]) else None
        indent = len(match["indent"])
        code = "".join(ln[indent:] if ln[:indent].isspace() else ln for ln in match["code"].splitlines(keepends=True))
        found.append(Block(page, line, match["lang"], code, marker))
    return found


ALL_BLOCKS = [block for page in PAGES for block in blocks(page)]


# ------------------------------------------------------------------------- what the pages must say
def test_every_block_names_its_language():
    unnamed = [str(b) for b in ALL_BLOCKS if b.lang not in RUNNABLE | SHOWN]
    assert not unnamed, f"name each block's language ({sorted(RUNNABLE | SHOWN)}):\n" + "\n".join(unnamed)


def test_every_block_that_is_not_run_says_what_checks_it():
    for block in ALL_BLOCKS:
        if block.marker is None:
            continue
        assert block.lang in RUNNABLE, f"{block}: only runnable blocks take a 'not run' comment"
        how = NOT_RUN.match(block.marker)["how"]
        paths = [word.strip("`,;()").rstrip(".") for word in how.split() if "/" in word or word.endswith(".py")]
        assert paths and all((ROOT / path).exists() for path in paths), (
            f"{block}: 'checked by' must name the repository file(s) that check it, got {how!r}")


def test_no_code_is_indented_instead_of_fenced():
    """An indented code block has no language and is never run: every example is fenced."""
    indented = []
    for page in PAGES:
        text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), page.read_text(encoding="utf-8"))
        lines = text.splitlines()
        for number, line in enumerate(lines, 1):
            previous = lines[number - 2] if number > 1 else ""
            context = [ln for ln in lines[: number - 1] if ln.strip() and not ln.startswith("    ")]
            in_list = bool(context) and re.match(r"\s*(?:[-*]|\d+\.)\s", context[-1]) is not None
            if line.startswith("    ") and line.strip() and not previous.strip() and not in_list:
                indented.append(f"{page.relative_to(ROOT)}:{number}")
    assert not indented, "indented code: fence it with its language\n" + "\n".join(indented)


def test_make_run_lines_are_understood():
    for block in ALL_BLOCKS:
        if block.marker is None and block.lang in {"sh", "bash"}:
            for line in block.code.splitlines():
                if re.match(r"(?:[A-Z][A-Z0-9_]*=\S+\s+)*make run\b", line.strip()):
                    assert MAKE_RUN.match(line.strip()), f"{block}: the test cannot read {line.strip()!r}"


# ------------------------------------------------------------------------------------ the runner
@dataclass
class Stacks:
    """Gateways started as ``make run`` lines would start them, in front of the session tritonserver."""

    triton: object
    model_dir: Path
    workdir: Path
    running: dict = field(default_factory=dict)

    def get(self, model: str, env: dict[str, str]) -> GatewayProcess:
        key = (model, tuple(sorted(env.items())))
        if key not in self.running:
            args = {"triton_endpoints": self.triton.grpc_url, **served_model_args([model], {served_name(model): self._dir(model)})}
            env = {name: str(self.workdir / value) if (self.workdir / value).is_file() else value for name, value in env.items()}
            credentials = None
            if env.get("RERANKER_TLS_CERT"):
                credentials = grpc.ssl_channel_credentials(Path(env["RERANKER_TLS_CERT"]).read_bytes())
            process = GatewayProcess(args, env={**os.environ, **env}, credentials=credentials,
                                     log_path=self.workdir / f"gateway-{len(self.running)}.log")
            process.start()
            self.running[key] = process
        return self.running[key]

    def _dir(self, model: str) -> Path:
        """The model directory the gateway reads: the tiny model's, or the directory a path names (which must hold
        the tiny model, the weights the session tritonserver serves)."""
        if model in {"tiny", "ara"}:
            return self.model_dir
        directory = (self.workdir / model).resolve()
        assert (directory / "tokenizer.json").read_bytes() == (self.model_dir / "tokenizer.json").read_bytes(), (
            f"make run MODEL={model}: examples serve the tiny model, under its name, as ara, or from a copy of its directory")
        return directory

    def close(self) -> None:
        for process in self.running.values():
            process.stop()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A scratch checkout: links to every top-level entry of the repository, .venv to the running virtualenv,
    and a bin/ of stand-ins first on PATH (make without rebuilding the virtualenv, curl failing on HTTP errors,
    grpcurl through reflection where it is missing)."""
    work = tmp_path_factory.mktemp("docs-examples")
    for entry in ROOT.iterdir():
        if entry.name not in {".venv", ".git", "logs"}:
            (work / entry.name).symlink_to(entry)
    (work / ".venv").symlink_to(Path(sys.prefix))
    shims = work / ".docs-bin"
    shims.mkdir()
    stand_ins = {
        "make": f'exec {shutil.which("make")} -o .venv/.installed "$@"',
        "curl": f'exec {shutil.which("curl")} --fail-with-body "$@"',
    }
    if shutil.which("grpcurl") is None:
        stand_ins["grpcurl"] = f'PYTHONPATH={shlex.quote(str(ROOT))}${{PYTHONPATH:+:$PYTHONPATH}} exec {sys.executable} -m tests.docs_grpcurl "$@"'
    for name, body in stand_ins.items():
        (shims / name).write_text(f"#!/usr/bin/env bash\n{body}\n")
        (shims / name).chmod(0o755)
    return work


@pytest.fixture(scope="module")
def stacks(triton, tiny_model_dir, workdir):
    running = Stacks(triton, tiny_model_dir, workdir)
    yield running
    running.close()


def _make_run(line: str, workdir: Path, env: dict[str, str]) -> tuple[str, dict[str, str]]:
    """(MODEL, RERANKER_* variables) of a ``make run`` line, after checking that the Makefile passes on
    every variable the line sets."""
    match = MAKE_RUN.match(line.strip())
    variables = dict(item.split("=", 1) for item in match["vars"].split())
    # Under `make test` the parent make's variables would make this one print "Entering/Leaving directory".
    clean = {k: v for k, v in env.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES")}
    shown = subprocess.run(["make", "--no-print-directory", "-n", "run", *(f"{k}={v}" for k, v in variables.items())],
                           cwd=workdir, env=clean, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    command = shown.stdout.strip().splitlines()[-1].split()
    for name, value in variables.items():
        assert value in command, f"make run ignores {name}={value}: it runs {' '.join(command)}"
    settings = dict(item.split("=", 1) for item in match["env"].split())
    return variables.get("MODEL", "ara"), settings


def _run(block: Block, code: str, workdir: Path, env: dict[str, str]) -> None:
    if block.lang == "python":
        script = workdir / f"example-{block.page.stem}-{block.line}.py"
        script.write_text(code, encoding="utf-8")
        command = [str(workdir / ".venv" / "bin" / "python"), script.name]
    else:
        script = workdir / f"example-{block.page.stem}-{block.line}.sh"
        script.write_text(code, encoding="utf-8")
        command = ["bash", "-e", "-o", "pipefail", script.name]
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
    assert done.returncode == 0, (
        f"{block} exited {done.returncode}\n--- as run:\n{code}\n--- stdout:\n{done.stdout[-3000:]}\n--- stderr:\n{done.stderr[-3000:]}")


@pytest.mark.parametrize("page", [p for p in PAGES if any(b.lang in RUNNABLE and not b.marker for b in blocks(p))],
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_example_of_the_page_runs(page: Path, stacks: Stacks, workdir: Path):
    env = {**os.environ, "PATH": f"{workdir / '.docs-bin'}:{os.environ['PATH']}"}
    stack = stacks.get("tiny", {})
    for block in blocks(page):
        if block.lang not in RUNNABLE or block.marker:
            continue
        lines = []
        for line in block.code.splitlines():
            if block.lang != "python" and MAKE_RUN.match(line.strip()):
                model, settings = _make_run(line, workdir, env)
                stack = stacks.get(model, settings)
                line = f": {line}   # started by the test"
            lines.append(line)
        addresses = {"50051": stack.target, "8080": stack.args["http_listen"], "9464": stack.args["metrics_listen"]}
        code = ADDRESS.sub(lambda m, addresses=addresses: addresses[m.group(1)], "\n".join(lines) + "\n")
        _run(block, code, workdir, {**env, "RERANKER_TARGET": stack.target})
