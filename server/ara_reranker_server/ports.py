"""Picking a free TCP port: for the gateway's workers (a port they all share) and the launchers (Triton's and test
gateways' ports)."""

from __future__ import annotations

import fcntl
import os
import random
import socket
import tempfile
import threading
from pathlib import Path

__all__ = ["free_port"]

_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Every port this process picked -> the descriptor of its lock file, held while the process lives (None without a
# lock directory).
_given: dict[int, int | None] = {}
_lock = threading.Lock()
_random = random.SystemRandom()  # not the random module's state: a forked child would draw the parent's sequence


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now, for a server about to bind it.

    Between this pick and that bind another process may take the port. The kernel's own choice (bind to port 0) is
    a port of the ephemeral range, which every outgoing connection on the machine draws from too, so it is picked
    at random outside that range instead (where only listeners bind), and never twice by one process; launchers
    whose child still finds its port taken pick again (GatewayProcess). Processes of this project also lock each
    port they pick (a file under the temporary directory, released when the process exits), so that two of them
    (test workers, launchers) never pick the same one."""
    low, high = _outside_ephemeral()
    with _lock:
        for _ in range(200):
            port = _random.randrange(low, high)
            if port not in _given and _bindable(host, port) and (lock := _claim(port)) is not False:
                _given[port] = lock
                return port
    with socket.socket() as sock:  # nothing free out there: the kernel's choice
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _outside_ephemeral() -> tuple[int, int]:
    """[low, high) of ports for listeners: below the ephemeral range, or above it, where there is room."""
    try:
        first, last = map(int, _EPHEMERAL.read_text().split())
    except (OSError, ValueError):
        first, last = 32768, 60999  # Linux's default
    if first - 10000 >= 2000:
        return 10000, first
    if 65536 - (last + 1) >= 2000:
        return last + 1, 65536
    return 10000, 65536


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _claim(port: int) -> int | None | bool:
    """Lock ``port`` for this process: the lock file's descriptor; False when another process holds it; None
    without a lock directory (the port is taken unlocked)."""
    directory = Path(tempfile.gettempdir()) / "ara-reranker-ports"
    try:
        directory.mkdir(exist_ok=True)
        fd = os.open(directory / str(port), os.O_CREAT | os.O_RDWR, 0o666)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    return fd
