"""The one way this project runs a server as a child process: start it with its output in a log file,
wait until it is ready, stop it.

Used for tritonserver and the gateway (``make run``, benchmarks, test fixtures), Infinity (benchmarks)
and Prometheus (monitoring tests). ``wait_until`` is the polling loop they share.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

__all__ = ["ChildExited", "ChildProcess", "wait_until"]


class ChildExited(RuntimeError):
    """The child exited while we waited for it to become ready; the message holds its log's tail."""


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, detail: Callable[[], str] = lambda: "",
               poll_s: float = 0.25) -> None:
    """Poll ``condition`` until it holds; TimeoutError naming ``what`` (and ``detail()``) after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout_s:.0f}s\n{detail()}".rstrip())
        time.sleep(poll_s)


class ChildProcess:
    """A child process whose stdout and stderr go to ``log_path``.

    ``own_group``: the child leads a process group of its own, and stopping it signals the whole group
    (tritonserver's Python-backend stubs and Infinity's workers would otherwise outlive it)."""

    def __init__(self, name: str, log_path: Path, *, own_group: bool = False) -> None:
        self.name = name
        self.log_path = Path(log_path)
        self.own_group = own_group
        self.popen: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return None if self.popen is None else self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self, command: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | str | None = None) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                          env=dict(os.environ if env is None else env), start_new_session=self.own_group)

    def wait_ready(self, ready: Callable[[], bool], timeout_s: float, poll_s: float = 0.25) -> None:
        """Poll ``ready()`` until it holds. ChildExited if the process exits first; TimeoutError when the
        time runs out (the process is left running: the caller decides what to do with it)."""

        def exited_or_ready() -> bool:
            if not self.running:
                code = None if self.popen is None else self.popen.returncode
                raise ChildExited(f"{self.name} exited with {code}; log {self.log_path}:\n{self.log_tail()}")
            return ready()

        wait_until(exited_or_ready, timeout_s, f"{self.name} not ready", self.log_tail, poll_s)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def send(self, sig: int) -> None:
        """Send ``sig`` to the child (its group with ``own_group``) if it still runs; do not wait."""
        if self.running:
            self._signal(self.popen, sig)

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM and wait up to ``timeout_s``, then SIGKILL; the exit code (None when never started).

        With ``own_group`` the group is SIGKILLed even when the child already exited: what it started
        would otherwise live on (Triton's stubs hold shared memory)."""
        popen, self.popen = self.popen, None
        if popen is None:
            return None
        try:
            if popen.poll() is None:
                self._signal(popen, signal.SIGTERM)
                popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            pass
        if self.own_group or popen.poll() is None:
            self._signal(popen, signal.SIGKILL)
        return popen.wait()

    def kill(self) -> None:
        """SIGKILL at once, without a chance to clean up (fault-injection tests)."""
        popen, self.popen = self.popen, None
        if popen is not None:
            self._signal(popen, signal.SIGKILL)
            popen.wait()

    def _signal(self, popen: subprocess.Popen, sig: int) -> None:
        try:
            if self.own_group:
                os.killpg(popen.pid, sig)
            else:
                popen.send_signal(sig)
        except ProcessLookupError:
            pass
