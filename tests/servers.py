"""How the tests start and stop a private server (PostgreSQL, SeaweedFS): a process in a
directory of its own, its output in a log there, polled until it answers, stopped with
SIGTERM then SIGKILL, its directory removed.

    proc = spawn([...], root, "weed.log")
    wait_ready(proc, root / "weed.log", probe, timeout=90, what="SeaweedFS")
    stop(proc, root, group=True)
    weed = require(weed_binary(), "SeaweedFS 'weed' not found")   # or skip the test
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def require(found: T | None, why: str) -> T:
    """``found``, or skip the test saying ``why``. With ``CI=true`` the skip fails the run
    (the conftest hook turns every skip into a failure there), so this never has to."""
    if found is None:
        import pytest

        pytest.skip(why)
    return found


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (all held open until all are chosen)."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [int(s.getsockname()[1]) for s in socks]
    for s in socks:
        s.close()
    return ports


def spawn(cmd: list[str], root: Path, log: str,
          preexec_fn: Callable[[], None] | None = None) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in ``root`` as a session of its own, output to ``root/log``."""
    with open(root / log, "wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=root,
                                preexec_fn=preexec_fn, start_new_session=True)


def log_tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def wait_ready(proc: subprocess.Popen[bytes], log: Path, probe: Callable[[], object],
               timeout: float, what: str) -> None:
    """Call ``probe`` until it returns without raising; a clear error with the server's log
    if the process exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited (status {proc.returncode}):\n{log_tail(log)}")
        try:
            probe()
            return
        except Exception as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} not ready after {timeout:.0f} s ({exc}):\n"
                                   f"{log_tail(log)}") from exc
        time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes], root: Path, *, group: bool,
         timeout: float = 20.0) -> None:
    """SIGTERM (to the process, or its whole session with ``group``), SIGKILL after
    ``timeout``; then remove ``root``."""
    if proc.poll() is None:
        def send(sig: signal.Signals) -> None:
            try:
                if group:
                    os.killpg(proc.pid, sig)
                else:
                    proc.send_signal(sig)
            except ProcessLookupError:
                pass

        send(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            send(signal.SIGKILL)
            proc.wait()
    shutil.rmtree(root, ignore_errors=True)
