"""A private system bus with a user-space BlueZ on it, for the simulated rig and the tests.

``PrivateBluez`` starts ``dbus-daemon`` on a socket in a temporary directory and BlueZoo (a
user-space implementation of the org.bluez D-Bus API) on that bus, with one adapter for the
central (the agent's ``hciN``) plus one adapter per simulated band: a band advertises and
serves its GATT application from its own adapter, and adapters in one BlueZoo see each other.

Every child runs in its own process group and is told to die with its parent
(``PR_SET_PDEATHSIG``), so nothing outlives the rig, even after ``kill -9`` of the agent.
``DBUS_SYSTEM_BUS_ADDRESS`` in ``env`` (and, while ``export()`` is active, in ``os.environ``)
points bleak and the band programs at the private bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from agent.errors import SourceError

BUS_ENV = "DBUS_SYSTEM_BUS_ADDRESS"
CENTRAL_ADDRESS = "00:11:22:33:44:55"


def missing_tools() -> list[str]:
    """What the simulated BlueZ needs and this machine lacks (empty: all there)."""
    missing = []
    if shutil.which("dbus-daemon") is None:
        missing.append("dbus-daemon (apt install dbus)")
    if bluezoo_command() is None:
        missing.append("bluezoo (pip install bluezoo)")
    return missing


def bluezoo_command() -> list[str] | None:
    here = Path(sys.executable).parent / "bluezoo"
    if here.is_file():
        return [str(here)]
    found = shutil.which("bluezoo")
    return [found] if found else None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def spawn(argv: Sequence[str], env: dict[str, str], *, stdout: int | IO[Any] | None = None,
          stderr: int | IO[Any] | None = None) -> subprocess.Popen[bytes]:
    """Start a child in its own process group that dies with this process."""
    return subprocess.Popen(
        list(argv), env=env, stdin=subprocess.DEVNULL,
        stdout=stdout if stdout is not None else subprocess.DEVNULL,
        stderr=stderr if stderr is not None else subprocess.DEVNULL,
        start_new_session=True, preexec_fn=_die_with_parent,
    )


def terminate(proc: subprocess.Popen[bytes], timeout: float = 3.0) -> None:
    """Stop a child started by ``spawn`` and its whole process group."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers in the group
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)


def run_async(coro: Any) -> Any:
    """Run a coroutine to completion on a fresh loop in a helper thread (safe in any caller)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target, name="wearcap-bluez-probe", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


async def _adapters_ready(address: str, want: list[str]) -> bool:
    from agent.wrist.bluez_dbus import managed_objects

    objects = await managed_objects(bus_address=address)
    for name in want:
        props = objects.get(f"/org/bluez/{name}", {}).get("org.bluez.Adapter1")
        if props is None or not props["Powered"].value:
            return False
    return True


class PrivateBluez:
    """dbus-daemon + BlueZoo with the given adapter addresses (index i is ``hci<i>``)."""

    def __init__(self, adapters: Sequence[str], *, scan_interval: int = 1,
                 workdir: str | None = None, rssi: dict[str, int] | None = None) -> None:
        """``rssi``: the RSSI (dBm) the other adapters see for each adapter address
        (agent.sim.radio; None: BlueZoo's 0 dBm for all). ``set_rssi`` changes it live."""
        if not adapters:
            raise ValueError("at least one adapter")
        self.adapters = list(adapters)
        self.rssi = dict(rssi) if rssi is not None else None
        self.scan_interval = scan_interval
        self._own_dir = workdir is None and not os.environ.get("WEARCAP_SIM_DEBUG")
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="wearcap-bluez-"))
        self.address = f"unix:path={self.dir / 'system_bus_socket'}"
        # The helpers must not speak for the service to systemd (or to a bench listening
        # as systemd would): only the service itself says READY or WATCHDOG.
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        self.env[BUS_ENV] = self.address
        self.procs: list[subprocess.Popen[bytes]] = []
        self._saved_env: str | None = None

    def start(self, timeout: float = 20.0) -> PrivateBluez:
        missing = missing_tools()
        if missing:
            raise SourceError("the simulated BlueZ needs " + ", ".join(missing), device="sim")
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        sock = self.dir / "system_bus_socket"
        log = (self.dir / "dbus-daemon.log").open("wb")
        self.procs.append(spawn(["dbus-daemon", "--session", "--nofork", "--nopidfile",
                                 f"--address={self.address}"], self.env, stderr=log))
        while not sock.exists():
            self._check_alive("dbus-daemon", deadline)
            time.sleep(0.01)
        cmd = bluezoo_command()
        assert cmd is not None
        if self.rssi is not None:
            import importlib.util

            if importlib.util.find_spec("bluezoo") is None:
                raise SourceError("the simulated radio (RSSI per band) needs bluezoo in "
                                  f"{sys.executable}'s environment (pip install bluezoo)",
                                  device="sim")
            self.set_rssi(self.rssi)
            cmd = [sys.executable, "-m", "agent.sim.radio", "--rssi-file",
                   str(self.dir / "rssi.json")]
        argv = [*cmd, "--auto-enable", "--scan-interval", str(self.scan_interval),
                "-v" if os.environ.get("WEARCAP_SIM_DEBUG") else "-q"]
        for a in self.adapters:
            argv += ["-a", a]
        log = (self.dir / "bluezoo.log").open("wb")
        self.procs.append(spawn(argv, self.env, stderr=log))
        want = [f"hci{i}" for i in range(len(self.adapters))]
        while True:
            self._check_alive("bluezoo", deadline)
            with contextlib.suppress(Exception):
                if run_async(_adapters_ready(self.address, want)):
                    return
            time.sleep(0.05)

    def set_rssi(self, rssi: dict[str, int]) -> None:
        """What each band's RSSI is from the next scan on (a band moved nearer or away)."""
        self.rssi = {**(self.rssi or {}), **{k.upper(): int(v) for k, v in rssi.items()}}
        path = self.dir / "rssi.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.rssi))
        os.replace(tmp, path)

    def _check_alive(self, what: str, deadline: float) -> None:
        for p in self.procs:
            if p.poll() is not None:
                raise SourceError(f"{what} exited with status {p.returncode} "
                                  f"(logs in {self.dir})", device="sim")
        if time.monotonic() > deadline:
            raise SourceError(f"{what} did not become ready (logs in {self.dir})", device="sim")

    def stop(self) -> None:
        for p in reversed(self.procs):
            terminate(p)
        self.procs.clear()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    @contextlib.contextmanager
    def export(self) -> Iterator[None]:
        """Point this process's D-Bus clients (bleak) at the private bus while active."""
        saved = os.environ.get(BUS_ENV)
        os.environ[BUS_ENV] = self.address
        _reset_bleak_bus_cache()
        try:
            yield
        finally:
            if saved is None:
                os.environ.pop(BUS_ENV, None)
            else:
                os.environ[BUS_ENV] = saved
            _reset_bleak_bus_cache()

    def __enter__(self) -> PrivateBluez:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _reset_bleak_bus_cache() -> None:
    """bleak keeps one BlueZ manager per event loop (a new bus needs a new loop); the retry
    connector remembers a missing bus socket, which is forgotten here."""
    mod = sys.modules.get("bleak_retry_connector.bleak_manager")
    reset = getattr(mod, "_reset_dbus_socket_cache", None)
    if reset is not None:
        with contextlib.suppress(Exception):
            reset()
