"""Peak resident memory (RSS) of the processes that serve a system, sampled in the background."""

from __future__ import annotations

import threading
from typing import Callable

import psutil

__all__ = ["PeakRss"]


class PeakRss:
    """Samples, every ``interval_s``, the summed RSS of ``pids()`` and all their descendants (Triton's
    Python-backend stubs, for instance); ``peak_mib`` is the largest sum seen."""

    def __init__(self, pids: Callable[[], list[int]], interval_s: float = 0.25) -> None:
        self._pids = pids
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")

    @property
    def peak_mib(self) -> float:
        return round(self.peak_bytes / 2**20, 1)

    def __enter__(self) -> "PeakRss":
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> int:
        total = 0
        seen: set[int] = set()
        for pid in self._pids():
            try:
                root = psutil.Process(pid)
                for proc in [root, *root.children(recursive=True)]:
                    if proc.pid not in seen:
                        seen.add(proc.pid)
                        total += proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        self.peak_bytes = max(self.peak_bytes, total)
        return total
