"""The services' live status: a JSON file rewritten atomically every second under /run.

/run is a tmpfs: the status never touches the SD card, and no network port is opened on the
rig. ``wearcap status`` and ``wearcap selftest`` read it; the same figures go to a Prometheus
textfile (``wearcap.prom``, for node_exporter's textfile collector) in the same directory,
rewritten every ``PROM_SECONDS``: node_exporter reads it only when scraped (every 15 s or
more), and rendering it (prometheus_client's exposition, in Python) costs the capture's
writer loop ~20x what the JSON does.

Where: ``$WEARCAP_RUN_DIR``, else ``$RUNTIME_DIRECTORY`` (systemd's ``RuntimeDirectory=``),
else ``/run/wearcap`` when it can be written, else ``$XDG_RUNTIME_DIR/wearcap``, else
``/tmp/wearcap-<uid>``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from agent import durable

CAPTURE_FILE = "capture.json"
PROM_FILE = "wearcap.prom"
STALE_SECONDS = 5.0
"""A status file older than this is from a service that stopped or hangs."""
PROM_SECONDS = 5.0
"""The Prometheus textfile is rewritten at most this often (its figures are at most this old
plus the publisher's ``every``); ``capture.json`` every publication."""


def run_dir() -> Path:
    for env in ("WEARCAP_RUN_DIR", "RUNTIME_DIRECTORY"):
        value = os.environ.get(env)
        if value:
            return Path(value.split(":")[0])
    system = Path("/run/wearcap")
    if system.is_dir() and os.access(system, os.W_OK | os.X_OK):
        return system
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and Path(xdg).is_dir():
        return Path(xdg) / "wearcap"
    if system.is_dir():
        return system  # readable by `wearcap status` run as another user
    return Path(tempfile.gettempdir()) / f"wearcap-{os.getuid()}"


def candidates() -> list[Path]:
    """Every directory a service may have written its status to, most specific first (a
    reader may be another user than the service: it looks in all of them)."""
    out = [Path(v.split(":")[0]) for v in (os.environ.get("WEARCAP_RUN_DIR"),
                                           os.environ.get("RUNTIME_DIRECTORY")) if v]
    if os.environ.get("WEARCAP_RUN_DIR"):
        return out
    out.append(Path("/run/wearcap"))
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        out.append(Path(xdg) / "wearcap")
    out.append(Path(tempfile.gettempdir()) / f"wearcap-{os.getuid()}")
    return out


def find_capture() -> dict[str, Any] | None:
    """The capture service's live status: the freshest one found, with ``path``."""
    best: dict[str, Any] | None = None
    for d in candidates():
        doc = read(d / CAPTURE_FILE)
        if doc is None:
            continue
        doc["path"] = str(d / CAPTURE_FILE)
        if best is None or (doc["fresh"], -doc["age_s"]) > (best["fresh"], -best["age_s"]):
            best = doc
    return best


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` whole; no fsync: on a tmpfs there is nothing to make durable, and a
    reader sees the old file or the new one. Readable by the technician's ``wearcap status``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    durable.write_atomic(path, data, durable=False)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o644)


def read(path: Path) -> dict[str, Any] | None:
    """The status document at ``path`` with its ``age_s``, or None if there is none."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    doc["age_s"] = round(time.time() - float(doc.get("updated", 0)), 1)
    doc["fresh"] = doc["age_s"] < STALE_SECONDS and _alive(doc.get("pid"))
    return doc


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Publisher:
    """Writes a status document at most every ``every`` seconds, and its Prometheus textfile
    at most every ``prom_every``. A write that fails is counted, never raised: status is not
    worth a recording."""

    def __init__(self, directory: Path | None = None, *, every: float = 1.0,
                 prom_every: float = PROM_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.dir = directory or run_dir()
        self.every = every
        self.prom_every = prom_every
        self.clock = clock
        self._last = -1e18
        self._prom_last = -1e18
        self.failures = 0
        self.last_error = ""
        self._prom = PromFile()
        self._dir_made = False

    def due(self) -> bool:
        # 5 % early is due: the writer loop asks once a second on its own clock, and a
        # strict test would skip every other second when the two clocks' phases cross
        return self.clock() - self._last >= self.every * 0.95

    def publish(self, doc: dict[str, Any]) -> bool:
        now = self._last = self.clock()
        try:
            if not self._dir_made:
                self.dir.mkdir(parents=True, exist_ok=True)
                self._dir_made = True
                self._prom_last = -1e18  # a directory made again gets both files at once
            # compact JSON: the C encoder (an indent would take the pure-Python one)
            _replace(self.dir / CAPTURE_FILE, json.dumps(doc).encode())
            if now - self._prom_last >= self.prom_every * 0.95:  # 5 % early: as due()
                self._prom.write(self.dir / PROM_FILE, doc)
                self._prom_last = now
        except OSError as exc:
            self.failures += 1
            self.last_error = str(exc)
            self._dir_made = False  # the directory may have gone: make it again next time
            return False
        return True

    def clear(self) -> None:
        """The service stopped: its status must not look live."""
        for name in (CAPTURE_FILE, PROM_FILE):
            with contextlib.suppress(OSError):
                (self.dir / name).unlink()


def _replace(path: Path, data: bytes) -> None:
    """``write_atomic`` for a directory known to exist: the temp file is created 0644."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.fchmod(fd, 0o644)  # whatever the umask: the technician's `wearcap status` reads it
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class PromFile:
    """The status figures as Prometheus gauges (node_exporter's textfile collector), in one
    registry kept across writes: each write sets this document's series and removes the
    ones it no longer has (a band unconfigured, a figure gone)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._gauges: dict[str, Gauge] = {}
        self._series: dict[str, set[tuple[str, ...]]] = {}

    def write(self, path: Path, doc: dict[str, Any]) -> None:
        seen: dict[str, set[tuple[str, ...]]] = {}
        dev = str(doc.get("device_id", ""))
        gauges = self._gauges

        def gauge(name: str, doc_: str, value: object, **labels: str) -> None:
            if not isinstance(value, (int, float)):
                return
            g = gauges.get(name)
            if g is None:
                g = gauges[name] = Gauge(name, doc_, ["device", *labels],
                                         registry=self.registry)
            key = (dev, *labels.values())
            g.labels(*key).set(float(value))
            seen.setdefault(name, set()).add(key)

        _figures(doc, gauge)
        for name, keys in self._series.items():
            for key in keys - seen.get(name, set()):
                gauges[name].remove(*key)
        self._series = seen
        write_to_textfile(str(path), self.registry)


def write_prometheus(path: Path, doc: dict[str, Any]) -> None:
    """The status figures as Prometheus gauges, once (a publisher keeps a ``PromFile``)."""
    PromFile().write(path, doc)


def _figures(doc: dict[str, Any], gauge: Callable[..., None]) -> None:
    """Every figure of a status document, as ``gauge(name, help, value, **labels)``."""
    gauge("wearcap_recording", "1 while the capture service records",
          int(doc.get("state") == "recording"))
    gauge("wearcap_status_updated_seconds", "unix time of this status", doc.get("updated"))
    cam = doc.get("camera") or {}
    gauge("wearcap_camera_fps", "camera frames per second over the last second", cam.get("fps"))
    gauge("wearcap_camera_frames_total", "frames written since start", cam.get("frames"))
    gauge("wearcap_camera_dropped_total", "frames dropped before the writer",
          cam.get("dropped"))
    for s in doc.get("streams") or []:
        name = str(s.get("name", "?"))
        gauge("wearcap_stream_rate_hz", "samples per second per stream", s.get("rate_hz"),
              stream=name)
        gauge("wearcap_stream_streaming", "1 while the stream delivers",
              int(bool(s.get("streaming"))), stream=name)
        gauge("wearcap_stream_gaps_total", "gaps written per stream", s.get("gaps"),
              stream=name)
        gauge("wearcap_stream_clock_bound_seconds", "clock fit error bound",
              None if s.get("clock_bound_us") is None else s["clock_bound_us"] / 1e6,
              stream=name)
        for q in ("p50", "max"):
            v = s.get(f"rtt_ms_{q}")
            gauge("wearcap_ping_round_trip_seconds", "ping round trip to the head MCU over "
                  "its last pings", None if v is None else v / 1e3, stream=name, quantile=q)
    disk = doc.get("disk") or {}
    gauge("wearcap_disk_free_bytes", "free bytes on the spool's disk", disk.get("free_bytes"))
    gauge("wearcap_disk_hours_left", "hours of recording left at the current rate",
          disk.get("hours_left"))
    sync = doc.get("sync") or {}
    gauge("wearcap_upload_backlog_segments", "sealed segments not yet verified",
          sync.get("backlog_segments"))
    gauge("wearcap_upload_backlog_bytes", "bytes not yet verified", sync.get("backlog_bytes"))
    bat = doc.get("battery") or {}
    gauge("wearcap_battery_percent", "battery charge", bat.get("percent"))
