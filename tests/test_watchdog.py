"""systemd's side of the notify protocol, played over a real datagram socket: the capture
service says READY once it records, STATUS with what it does, and WATCHDOG only while its
writer makes progress. A stuck writer stops WATCHDOG; an absent band does not."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.capture import CaptureService, CaptureSettings
from agent.livestatus import Publisher
from agent.mcu.controls import Action
from agent.progress import progressing, stall_seconds
from agent.record.segment import SegmentWriter
from agent.record.spool import Spool
from agent.sources import ChannelSpec, Message


class Band:
    """A source that streams, or is absent (configured but delivering nothing)."""

    name = "left"

    def __init__(self) -> None:
        self.present = threading.Event()
        self.present.set()
        self.n = 0

    def channels(self) -> list[ChannelSpec]:
        return [ChannelSpec("/wrist/left/imu", "wearcap.Imu", {"type": "object"})]

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def flush(self) -> None: ...

    def drain(self) -> list[Message]:
        if not self.present.is_set():
            return []
        self.n += 1
        return [Message("/wrist/left/imu", time.monotonic_ns(), {"n": [self.n]})]

    def segment_metadata(self) -> dict[str, str]:
        return {}

    def status(self) -> dict[str, object]:
        on = self.present.is_set()
        return {"name": self.name, "streaming": on, "state": "streaming" if on else "lost",
                "absent_s": 0.0 if on else 1.0, "absent_cause": "" if on else "out of range"}


class Systemd:
    """The manager's end of NOTIFY_SOCKET: a bound AF_UNIX datagram socket. ``log`` holds
    what arrived since the last ``clear()``."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.log: list[str] = []

    def recv_all(self) -> list[str]:
        while True:
            try:
                self.log.append(self.sock.recv(4096).decode())
            except TimeoutError:
                return self.log

    def clear(self) -> None:
        self.recv_all()
        self.log = []

    def wait_for(self, prefix: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(m.startswith(prefix) for m in self.recv_all()):
                return
        raise AssertionError(f"no {prefix} from the service; got {sorted(set(self.log))}")


@pytest.fixture
def systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Systemd]:
    path = tmp_path / "notify.sock"
    sd = Systemd(path)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sd
    sd.sock.close()


def test_ready_status_watchdog_and_a_stalled_writer(tmp_path: Path, systemd: Systemd,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    stalled, entered, release = threading.Event(), threading.Event(), threading.Event()
    real_checkpoint = SegmentWriter.checkpoint

    def checkpoint(self: SegmentWriter) -> None:
        if stalled.is_set():  # an SD card that stops answering: the fsync never returns
            entered.set()
            release.wait()
        real_checkpoint(self)

    monkeypatch.setattr(SegmentWriter, "checkpoint", checkpoint)
    band = Band()
    stop = threading.Event()
    st = CaptureSettings(device_id="dog", config_digest="c" * 64, segment_seconds=3600.0,
                         chunk_seconds=0.1, watchdog_seconds=0.05, drain_seconds=0.02)
    svc = CaptureService(st, Spool(tmp_path / "spool", "dog"), None, [band], stop=stop,
                         status=lambda s: None, publisher=Publisher(tmp_path / "run"))
    worker = threading.Thread(target=svc.run)
    worker.start()
    try:
        systemd.wait_for("READY=1")
        systemd.wait_for("WATCHDOG=1")
        systemd.wait_for("STATUS=recording dog-00000000")

        # An absent band is not a stall: the writer still checkpoints (the band's gap).
        band.present.clear()
        systemd.clear()
        systemd.wait_for("STATUS=recording dog-00000000, left absent")
        systemd.clear()
        systemd.wait_for("WATCHDOG=1")
        band.present.set()

        # A stuck writer: no WATCHDOG at all while it is stuck.
        stalled.set()
        assert entered.wait(60)
        systemd.clear()
        time.sleep(20 * st.watchdog_seconds)  # many watchdog periods
        assert "WATCHDOG=1" not in systemd.recv_all(), systemd.log

        # Unstuck, it pings again.
        stalled.clear()
        release.set()
        systemd.clear()
        systemd.wait_for("WATCHDOG=1")
    finally:
        stalled.clear()
        release.set()
        stop.set()
        worker.join(60)
    assert not worker.is_alive()
    systemd.wait_for("STOPPING=1")
    assert not (tmp_path / "run" / "capture.json").exists()  # a stopped service is not live


def test_the_progress_rule() -> None:
    """With a segment open, progress is a recent checkpoint; with none (not started,
    paused on purpose) there is nothing to write and the loop turning is enough."""
    limit = stall_seconds(chunk_seconds=0.5, watchdog_seconds=1.0)
    assert limit == 2.0
    assert progressing(True, int(1.9e9), 0.5, 1.0)
    assert not progressing(True, int(2.1e9), 0.5, 1.0)
    assert progressing(False, int(1e12), 0.5, 1.0)


class Button:
    """The wearer's controls as the capture service polls them: a pause on request."""

    def __init__(self) -> None:
        self.pending: list[str] = []

    def poll(self, now_ns: int) -> list[Action]:
        out = [Action(kind, now_ns) for kind in self.pending]
        self.pending = []
        return out


def test_a_privacy_pause_keeps_the_watchdog_fed(tmp_path: Path, systemd: Systemd) -> None:
    from tests.h264_frames import EncoderCamera

    button = Button()
    stop = threading.Event()
    st = CaptureSettings(device_id="dog", config_digest="c" * 64, segment_seconds=1.0,
                         chunk_seconds=0.1, watchdog_seconds=0.05, drain_seconds=0.02)
    svc = CaptureService(st, Spool(tmp_path / "spool", "dog"), EncoderCamera(100_000, paced=True),
                         [Band()], stop=stop, status=lambda s: None,
                         publisher=Publisher(tmp_path / "run"), wearer=button)
    worker = threading.Thread(target=svc.run)
    worker.start()
    try:
        systemd.wait_for("READY=1")
        button.pending.append("pause")
        systemd.wait_for("STATUS=paused")
        systemd.clear()
        time.sleep(20 * st.watchdog_seconds)
        assert systemd.recv_all().count("WATCHDOG=1") >= 5, systemd.log  # still fed
        button.pending.append("resume")
        systemd.wait_for("STATUS=recording")
    finally:
        stop.set()
        worker.join(60)
    assert not worker.is_alive()


def test_the_sync_service_tells_systemd_why_it_is_idle(tmp_path: Path, systemd: Systemd) -> None:
    """Sync's watchdog is fed from its loop; STATUS= says whether it uploads, or why not."""
    import subprocess
    import sys

    from conftest import REPO
    from sync_servers import write_config

    (tmp_path / "token").write_text("t\n")
    cfg = write_config(tmp_path / "agent.toml", url="http://127.0.0.1:9/files/",
                       spool=tmp_path / "spool", token_file=tmp_path / "token",
                       probe_seconds=0.2)
    child = subprocess.Popen([sys.executable, "-m", "agent", "sync", "--config", str(cfg)],
                             cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        systemd.wait_for("READY=1")
        systemd.wait_for("STATUS=idle (collector unreachable")
        systemd.wait_for("WATCHDOG=1")
    finally:
        child.terminate()
        child.wait(30)
