"""Keep one tritonserver serving, as a container's restart policy and liveness probe do in compose and Kubernetes:
``make run`` and bench/chaos.py's single-replica stacks run under it.

The gateway mends what it can reach (it reloads a model whose Python-backend stub died); what it cannot is here. A
tritonserver that exits when nobody asked it to (a crash: Triton 2.51 can crash while a model whose stub was stopped
is reloaded; a SIGKILL) is started again on the same ports, at once and then with a doubling delay up to a bound; one
that stays up ``stable_s`` resets it. A tritonserver that runs but fails the inference liveness check
(``ara_reranker_model.probe``, Kubernetes' own) ``liveness_failures`` times in a row is stopped and started again too.
After ``max_failed_starts`` starts in a row that never got the models ready it gives up (``gave_up`` says why) rather
than retry a broken setup for ever. The gateway keeps running throughout: its health is NOT_SERVING while Triton is
away and SERVING again once its readiness polls find the new server.

    with TritonServer(options) as triton, TritonSupervisor(triton) as supervisor: ...
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from ara_reranker_model.probe import probe
from ara_reranker_server.launcher.triton_launcher import TritonServer

__all__ = ["SupervisionPolicy", "TritonSupervisor"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SupervisionPolicy:
    """When and how often a supervised tritonserver is started again."""

    poll_s: float = 0.5  # how often the process is checked for an exit
    backoff_s: tuple[float, float] = (1.0, 30.0)  # the delay before a repeated start: first, and at most (doubling)
    stable_s: float = 60.0  # a run this long counts as healthy: the next restart is immediate again
    max_failed_starts: int = 5  # starts in a row that never got the models ready before giving up
    # The liveness check, as deploy/k8s/base/triton-deployment.yaml has it (every 20 s, 20 s to answer, 3 failures).
    liveness_period_s: float = 20.0
    liveness_timeout_s: float = 20.0
    liveness_failures: int = 3


class TritonSupervisor:
    """A background thread that restarts ``triton`` when it exits or fails its liveness check (see the module)."""

    def __init__(self, triton: TritonServer, policy: SupervisionPolicy = SupervisionPolicy()) -> None:
        self.triton = triton
        self.policy = policy
        self.restarts: list[str] = []  # why each restart that brought Triton back was needed
        self.gave_up: str | None = None  # why supervision stopped, when it did before being asked to
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="triton-supervisor", daemon=True)
        self._delay = 0.0
        self._failed_starts = 0
        self._up_since = time.monotonic()

    def __enter__(self) -> "TritonSupervisor":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop supervising (tritonserver itself is left as it is; stop it after this)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(self.policy.liveness_timeout_s + 5)

    def _run(self) -> None:
        failures, next_check = 0, time.monotonic() + self.policy.liveness_period_s
        while not self._stopping.wait(self.policy.poll_s):
            if not self.triton.running:
                code = self.triton.process.returncode if self.triton.process is not None else None
                reason = f"exited with {code}"
            elif time.monotonic() >= next_check:
                next_check = time.monotonic() + self.policy.liveness_period_s
                problem = self._liveness_problem()
                failures = 0 if problem is None else failures + 1
                if failures < self.policy.liveness_failures:
                    continue
                reason = f"failed its liveness check {failures} times in a row ({problem})"
            else:
                continue
            if not self._restart(reason):
                return
            failures, next_check = 0, time.monotonic() + self.policy.liveness_period_s

    def _liveness_problem(self) -> str | None:
        """Why some served model cannot score a row now, or None when every one can."""
        for model in self.triton.model_names:
            problem = probe(f"http://{self.triton.http_url}", model, self.policy.liveness_timeout_s)
            if problem is not None:
                return f"{model}: {problem}"
        return None

    def _restart(self, reason: str) -> bool:
        """Start tritonserver again until its models are ready; False when stopped or given up meanwhile."""
        log.warning("tritonserver %s: starting it again on the same ports (log %s)", reason, self.triton.log_path)
        if time.monotonic() - self._up_since >= self.policy.stable_s:
            self._delay, self._failed_starts = 0.0, 0
        while True:
            if self._delay:
                log.warning("tritonserver: next start in %.0f s", self._delay)
            if self._stopping.wait(self._delay):
                return False
            self._delay = min(max(2 * self._delay, self.policy.backoff_s[0]), self.policy.backoff_s[1])
            # The whole process group: the Python-backend stubs of a crashed server would hold shared memory.
            self.triton.stop(timeout_s=5.0)
            self.triton.launch()
            problem = self._wait_ready()
            if problem is None:
                self.restarts.append(reason)
                self._up_since = time.monotonic()
                log.warning("tritonserver serves again (restart %d)", len(self.restarts))
                return True
            if self._stopping.is_set():
                return False
            self._failed_starts += 1
            if self._failed_starts >= self.policy.max_failed_starts:
                self.gave_up = f"tritonserver did not get ready in {self._failed_starts} starts in a row ({problem})"
                log.error("%s; giving up. Its log's tail:\n%s", self.gave_up, self.triton.log_tail())
                self.triton.stop(timeout_s=5.0)
                return False
            log.warning("tritonserver did not get ready (%s)", problem)

    def _wait_ready(self) -> str | None:
        """None once every model is ready; else why not (exited, or not within the startup timeout)."""
        deadline = time.monotonic() + self.triton.options.startup_timeout_s
        while not self._stopping.is_set():
            if not self.triton.running:
                return "exited while starting"
            if self.triton.is_ready():
                return None
            if time.monotonic() > deadline:
                return f"not ready after {self.triton.options.startup_timeout_s:.0f} s"
            self._stopping.wait(0.25)
        return "stopped"
