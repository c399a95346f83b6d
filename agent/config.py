"""Typed, frozen agent configuration, validated once at load.

A config is a stack of TOML files: a device profile from ``device_configs/`` (named by the
``profile`` key of the file above it), then the device-local file (``/etc/wearcap/agent.toml``
by default, or ``--config F``). Later files override earlier ones key by key. Every error names
the file, the key, the bad value and what is allowed.

Each section is a frozen dataclass; a field's ``metadata`` may carry ``choices``, ``min``,
``max`` or ``pattern``. Unknown keys are errors.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from agent.contract import DEVICE_ID_PATTERN
from agent.errors import ConfigError
from agent.wrist.registry import NAMES as WRIST_PROFILES

REPO_ROOT = Path(__file__).resolve().parent.parent
PROFILE_DIRS = (REPO_ROOT / "device_configs", Path("/usr/share/wearcap/device_configs"))
DEVICE_LOCAL = Path("/etc/wearcap/agent.toml")


def _f(default: Any, **meta: Any) -> Any:
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


ID_PATTERN = DEVICE_ID_PATTERN  # the one grammar, in agent/contract.py


@dataclass(frozen=True, slots=True)
class DeviceSection:
    id: str = _f("sim-0001", pattern=ID_PATTERN)
    model: str = _f("sim")


@dataclass(frozen=True, slots=True)
class CameraSection:
    backend: str = _f("ffmpeg", choices=("ffmpeg", "picamera2", "none"))
    input: str = _f("testsrc2=size={width}x{height}:rate={fps}")
    format: str = _f("lavfi")
    """FFmpeg input format ("" = let FFmpeg probe; "lavfi", "v4l2", ...)."""
    live: str = _f("auto", choices=("auto", "yes", "no"))
    """Whether the input is a live device; a non-live input is paced to ``fps``."""
    width: int = _f(1280, min=16, max=7680)
    height: int = _f(720, min=16, max=4320)
    fps: float = _f(30.0, min=1.0, max=240.0)
    encoder: str = _f("auto", choices=("auto", "libx264", "h264_v4l2m2m"))
    bitrate_kbps: int = _f(4000, min=100, max=100_000)
    keyframe_seconds: float = _f(2.0, min=0.1, max=60.0)
    exposure_us: int = _f(10_000, min=1, max=1_000_000)
    """Exposure the simulated sensor reports (a real sensor reports its own)."""
    ring_bytes: int = _f(8 * 1024 * 1024, min=1024 * 1024)
    """Encoded-frame ring between the encoder and the writer (about 20 s of 720p video)."""


@dataclass(frozen=True, slots=True)
class SegmentSection:
    seconds: float = _f(60.0, min=1.0, max=3600.0)
    chunk_seconds: float = _f(1.0, min=0.05, max=10.0)
    """Longest time data waits in memory before it is in a complete, CRC-checked, fsync'd
    chunk: sources flush their batches at every chunk close, so a kill -9 or power cut
    loses at most this much of any stream."""
    chunk_bytes: int = _f(4 * 1024 * 1024, min=64 * 1024)


@dataclass(frozen=True, slots=True)
class SpoolSection:
    path: str = _f("/var/lib/wearcap/spool")
    reserve_mb: int = _f(512, min=0)
    """Recording stops with a fault when free space would fall below this."""
    max_gb: float = _f(0.0, min=0.0)
    """Budget for the spool (0 = the whole disk less the reserve)."""


@dataclass(frozen=True, slots=True)
class BleSection:
    adapter: str = _f("hci0", pattern=r"hci[0-9]{1,2}")
    connect_timeout: float = _f(20.0, min=1.0, max=120.0)
    backoff_max: float = _f(30.0, min=0.5, max=600.0)
    batch_seconds: float = _f(2.0, min=0.05, max=2.0)
    """Wrist IMU samples per stored message: a batch is written once it spans this long, and
    at every chunk close (segment.chunk_seconds), whichever comes first. The default, longer
    than a chunk, makes each batch one chunk; a batch per 50 ms costs 11 B per sample instead
    of 6 (bench/bench_wrist_recording.py)."""


@dataclass(frozen=True, slots=True)
class WristBand:
    name: str = _f("left", pattern=r"[a-z][a-z0-9_]{0,31}")
    address: str = _f("", pattern=r"([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}")
    profile: str = _f("wearcap-open", choices=WRIST_PROFILES)
    rate_hz: float = _f(200.0, min=1.0, max=2000.0)
    latency_ms: float = _f(-1.0, min=-1.0, max=100.0)
    """Transport latency from the band's connection event to the agent on this host, if
    measured (e.g. by a tap seen by the head IMU and the band); -1: the sensor profile's
    default (device_configs/sensors/<profile>.toml, [timing])."""
    latency_uncertainty_ms: float = _f(-1.0, min=-1.0, max=100.0)
    """Half-width of the range the true latency may be in; -1: the profile's default (or,
    with latency_ms set, 0.3 ms)."""
    notify: str = _f("auto", choices=("auto", "acquire", "start"))
    """How the band's data notifications reach the agent: "acquire", through BlueZ's
    AcquireNotify (a socket, no D-Bus message per notification) where the band offers it,
    falling back to StartNotify if it fails or stays silent; "auto", the same, except that a
    band answering the two-way time exchange (open profile v2) keeps StartNotify, because its
    exchange's bound assumes the time-request writes and the notifications take alike paths
    (both D-Bus); "start", always StartNotify (D-Bus signals), for a band or host known to
    misbehave with AcquireNotify."""
    latency_source: str = _f("config", choices=("config", "calibrated"))
    """Where latency_ms comes from: "calibrated" when wearcap calibrate measured it on this
    rig (it writes this key), "config" when it was set by hand. Recordings say which."""


@dataclass(frozen=True, slots=True)
class McuSection:
    """The head microcontroller on a serial link (docs/mcu-protocol.md)."""

    enabled: bool = _f(False)
    port: str = _f("")
    """A device path, a udev symlink, or usb:VID:PID ("" on the simulated rig: its pty)."""
    baud: int = _f(921_600, min=9600)
    ping_hz: float = _f(10.0, min=0.5, max=100.0)
    """Two-way clock exchanges per second."""
    batch_seconds: float = _f(2.0, min=0.05, max=2.0)
    """Head IMU samples per stored message (also written at every chunk close; the default,
    longer than a chunk, makes each batch one chunk)."""
    long_press_s: float = _f(1.0, min=0.2, max=10.0)
    """A press at least this long is an annotation (shorter: pause/resume)."""
    discard_press_s: float = _f(5.0, min=2.0, max=30.0)
    """A press at least this long arms a discard of the last discard_minutes."""
    discard_cancel_s: float = _f(5.0, min=1.0, max=60.0)
    """After the LED/haptic confirm a discard, a press within this long cancels it."""
    discard_minutes: float = _f(5.0, min=0.1, max=120.0)
    low_battery_percent: int = _f(5, min=0, max=50)
    """At or below this, not charging: seal and stop (exit 3) before brown-out; 0 never."""
    resume_margin_percent: int = _f(5, min=0, max=50)
    """After a low-battery stop, capture resumes when charging, or without charging once the
    gauge reads low_battery_percent + this (wearcap battery --charging)."""
    pause_motion: bool = _f(False)
    """While paused, also hold back the wrist and head IMU streams (default: they go on)."""


@dataclass(frozen=True, slots=True)
class SimSection:
    """The simulated rig: used when ``enabled``; bands are simulated behind a private BlueZ."""

    enabled: bool = _f(False)
    drift_ppm: float = _f(50.0, min=0.0, max=500.0)
    interval_ms: list[float] = _f([7.5, 50.0])
    """Connection-interval range the simulated bands draw from."""
    seed: int = _f(1)
    mcu_link: str = _f("uart", choices=("uart", "usb-cdc"))
    """Latency model of the simulated MCU's serial link (agent.sim.mcu_link)."""
    mcu_drift_ppm: float = _f(35.0, min=-500.0, max=500.0)
    mcu_presses: list[str] = _f([])
    """Scripted button presses of the simulated MCU: "AT_S:HELD_S" each (e.g. "10:0.2"), AT_S
    counted from when capture first listens to it (accepts its hello)."""
    band_rssi_dbm: list[float] = _f([])
    """RSSI the rig's adapter sees for each [[wrist]] band, in order (missing: -50 dBm)."""
    taps: list[str] = _f([])
    """Scripted taps of a band against the head mount, felt by that band and the simulated MCU
    at one true instant: "BAND:AT_S" each (e.g. "left:12.5"), seconds after the rig starts."""
    band_latency_ms: list[float] = _f([])
    """Transport latency each simulated [[wrist]] band's notifications are held for after
    their connection event, in order (missing: 0), on top of the private bus's own. The agent
    is never told: wearcap calibrate measures it."""
    neighbour_rssi_dbm: list[float] = _f([])
    """More simulated bands in range that are not in [[wrist]] (another rig's, a spare on the
    shelf), one per RSSI given: `wearcap pair` must pick the nearest, not the first."""


@dataclass(frozen=True, slots=True)
class SyncSection:
    url: str = _f("http://127.0.0.1:8750/files/")
    token_file: str = _f("/etc/wearcap/token")
    state_db: str = _f("")
    """SQLite state of the sync service ("" = ``<spool>/sync.sqlite3``)."""
    chunk_bytes: int = _f(4 * 1024 * 1024, min=16 * 1024, max=256 * 1024 * 1024)
    connect_timeout: float = _f(10.0, min=0.1)
    read_timeout: float = _f(30.0, min=0.1)
    stall_seconds: float = _f(60.0, min=1.0)
    rescan_seconds: float = _f(30.0, min=1.0)
    allowed_networks: list[str] = _f([])
    only_while_charging: bool = _f(False)
    bandwidth_kbps: int = _f(0, min=0)
    pause_while_recording: bool = _f(False)
    write_timeout: float = _f(30.0, min=0.1)
    """A send that makes no progress this long aborts (also bounded by stall_seconds)."""
    backoff_base: float = _f(2.0, min=0.0, max=3600.0)
    backoff_cap: float = _f(300.0, min=0.0, max=86400.0)
    probe_seconds: float = _f(30.0, min=0.1)
    """How often an unreachable collector is probed again (OPTIONS)."""
    battery_file: str = _f("")
    """Battery state written by the capture service/MCU ("" = ``<spool>/battery.json``)."""
    charging_unknown_allows: bool = _f(True)
    """With only_while_charging: an unknown battery state (no gauge) counts as charging."""
    once_attempts: int = _f(5, min=1, max=1000)
    """With --once: failed attempts per segment before giving up on it for this run."""


@dataclass(frozen=True, slots=True)
class RetentionSection:
    keep_verified_hours: float = _f(24.0, min=0.0)
    """Verified segments are evicted this long after verification; when free space falls
    below spool.reserve_mb they go sooner, oldest first. Unverified ones never go."""


@dataclass(frozen=True, slots=True)
class Config:
    profile: str = _f("")
    device: DeviceSection = field(default_factory=DeviceSection)
    camera: CameraSection = field(default_factory=CameraSection)
    segment: SegmentSection = field(default_factory=SegmentSection)
    spool: SpoolSection = field(default_factory=SpoolSection)
    ble: BleSection = field(default_factory=BleSection)
    wrist: list[WristBand] = field(default_factory=list)
    mcu: McuSection = field(default_factory=McuSection)
    sim: SimSection = field(default_factory=SimSection)
    sync: SyncSection = field(default_factory=SyncSection)
    retention: RetentionSection = field(default_factory=RetentionSection)
    sources: tuple[str, ...] = ()
    """The files this config was built from, lowest layer first."""

    def digest(self) -> str:
        """SHA-256 of the effective config (not of where it came from)."""
        d = dataclasses.asdict(self)
        d.pop("sources", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def spool_path(self) -> Path:
        return Path(os.path.expanduser(self.spool.path))


# ---------------------------------------------------------------- loading


def _describe(tp: Any) -> str:
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if get_origin(tp) is list:
        return f"a list of {_describe(get_args(tp)[0])}s"
    return str(tp)


def _check_scalar(tp: Any, value: Any, path: str, key: str, meta: Any) -> Any:
    raw = value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, key, "wrong type", value=value, allowed=_describe(tp))
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, key, "wrong type", value=value, allowed=_describe(tp))
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(path, key, "wrong type", value=value, allowed=_describe(tp))
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(path, key, "not a finite number", value=value,
                              allowed="a finite number")
    elif tp is str and not isinstance(value, str):
        raise ConfigError(path, key, "wrong type", value=value, allowed=_describe(tp))
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(path, key, "not one of the choices", value=value,
                          allowed=", ".join(map(str, choices)))
    lo, hi = meta.get("min"), meta.get("max")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        rng = f"{lo if lo is not None else '-inf'} to {hi if hi is not None else 'inf'}"
        raise ConfigError(path, key, "out of range", value=raw, allowed=rng)
    pattern = meta.get("pattern")
    if pattern is not None and value != "" and not re.fullmatch(pattern, value):
        raise ConfigError(path, key, "does not match the pattern", value=value,
                          allowed=f"/{pattern}/")
    return value


def _build(cls: Any, table: dict[str, Any], origins: dict[str, str], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name != "sources"]
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        path = origins.get(dotted, origins.get(prefix.rstrip("."), "<config>"))
        if key not in names:
            raise ConfigError(path, dotted, "unknown key", allowed=", ".join(names))
        fld = next(f for f in dataclasses.fields(cls) if f.name == key)
        tp = hints[key]
        origin = get_origin(tp)
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(path, dotted, "must be a table", value=value)
            kwargs[key] = _build(tp, value, origins, f"{dotted}.")
        elif origin is list and dataclasses.is_dataclass(get_args(tp)[0]):
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise ConfigError(path, dotted, "must be an array of tables", value=value)
            kwargs[key] = [
                _build(get_args(tp)[0], v, origins, f"{dotted}[{i}].")
                for i, v in enumerate(value)
            ]
        elif origin is list:
            inner = get_args(tp)[0]
            if not isinstance(value, list):
                raise ConfigError(path, dotted, "wrong type", value=value,
                                  allowed=_describe(tp))
            kwargs[key] = [
                _check_scalar(inner, v, path, f"{dotted}[{i}]", fld.metadata)
                for i, v in enumerate(value)
            ]
        elif origin in (typing.Union, types.UnionType, Literal):
            kwargs[key] = value
        else:
            kwargs[key] = _check_scalar(tp, value, path, dotted, fld.metadata)
    return cls(**kwargs)


def _merge(base: dict[str, Any], top: dict[str, Any], origins: dict[str, str],
           path: str, prefix: str = "") -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            origins.setdefault(dotted, path)
            out[key] = _merge(out[key], value, origins, path, f"{dotted}.")
        else:
            out[key] = value
            origins[dotted] = path
            if isinstance(value, dict):
                _mark(value, origins, path, f"{dotted}.")
            elif isinstance(value, list):
                for i, v in enumerate(value):
                    if isinstance(v, dict):
                        _mark(v, origins, path, f"{dotted}[{i}].")
    return out


def _mark(table: dict[str, Any], origins: dict[str, str], path: str, prefix: str) -> None:
    for key, value in table.items():
        origins[f"{prefix}{key}"] = path
        if isinstance(value, dict):
            _mark(value, origins, path, f"{prefix}{key}.")


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(str(path), "", "no such file") from None
    except IsADirectoryError:
        raise ConfigError(str(path), "", "is a directory, not a TOML file") from None
    except PermissionError:
        raise ConfigError(str(path), "", "permission denied") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "", f"not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), "", "not valid TOML: not UTF-8 text") from None


def find_profile(name: str, referrer: str) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ConfigError(referrer, "profile", "not a profile name", value=name)
    for d in PROFILE_DIRS:
        p = d / f"{name}.toml"
        if p.is_file():
            return p
    known = sorted(
        {p.stem for d in PROFILE_DIRS if d.is_dir() for p in d.glob("*.toml")}
    )
    raise ConfigError(referrer, "profile", "no such device profile", value=name,
                      allowed=", ".join(known))


def _stack(path: Path) -> list[Path]:
    chain = [path]
    seen = {path.resolve()}
    while True:
        data = read_toml(chain[0])
        name = data.get("profile")
        if not name:
            return chain
        if not isinstance(name, str):
            raise ConfigError(str(chain[0]), "profile", "wrong type", value=name,
                              allowed="a string naming a file in device_configs/")
        parent = find_profile(name, str(chain[0]))
        if parent.resolve() in seen:
            raise ConfigError(str(chain[0]), "profile", "profiles refer to each other",
                              value=name)
        seen.add(parent.resolve())
        chain.insert(0, parent)


def load(path: str | Path) -> Config:
    """Load ``path`` with every profile below it; raise ConfigError naming what is wrong."""
    files = _stack(Path(path))
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for f in files:
        merged = _merge(merged, read_toml(f), origins, str(f))
    merged.pop("profile", None)
    cfg = _build(Config, merged, origins, "")
    cfg = dataclasses.replace(cfg, sources=tuple(str(f) for f in files),
                              profile=files[0].stem if len(files) > 1 else "")
    _cross_check(cfg, origins)
    return typing.cast(Config, cfg)


def _is_profile(path: str) -> bool:
    """A file in a profile directory is a layer, not a device's own config."""
    parent = Path(path).resolve().parent
    return any(d.is_dir() and parent == d.resolve() for d in PROFILE_DIRS)


def _check_identity(cfg: Config, origins: dict[str, str]) -> None:
    """Off the simulated rig a device config must say what it is, who it is and where it
    uploads: the defaults (the test pattern, ``sim-0001``, the loopback URL) are the
    simulated rig's, and a real rig recording under them would mix its data with others'."""
    top = cfg.sources[-1]
    if cfg.sim.enabled or _is_profile(top):
        return
    if len(cfg.sources) < 2:
        known = sorted({p.stem for d in PROFILE_DIRS if d.is_dir() for p in d.glob("*.toml")})
        raise ConfigError(top, "profile", "missing: without a device profile this config "
                          "records the test pattern; add a first line such as "
                          'profile = "pi5-imx708"', allowed=", ".join(known))
    if "device.id" not in origins:
        raise ConfigError(top, "device.id", "missing: every rig needs its own id (add "
                          '[device] id = "rig-0001", or run wearcap provision)')
    if "sync.url" not in origins:
        raise ConfigError(top, "sync.url", "missing: where this rig uploads (add [sync] "
                          'url = "https://collector.example/files/", or run wearcap provision)')


def _cross_check(cfg: Config, origins: dict[str, str]) -> None:
    names = [w.name for w in cfg.wrist]
    for i, w in enumerate(cfg.wrist):
        if names.count(w.name) > 1:
            raise ConfigError(origins.get(f"wrist[{i}].name", cfg.sources[-1]),
                              f"wrist[{i}].name", "names must be unique", value=w.name)
        if not w.address and not cfg.sim.enabled:
            raise ConfigError(origins.get(f"wrist[{i}].name", cfg.sources[-1]),
                              f"wrist[{i}].address", "a band needs an address (run wearcap pair)")
        for key in ("latency_ms", "latency_uncertainty_ms"):
            v = getattr(w, key)
            if v < 0 and v != -1:
                raise ConfigError(origins.get(f"wrist[{i}].{key}", cfg.sources[-1]),
                                  f"wrist[{i}].{key}", "must be >= 0, or -1 for the "
                                  "profile's default", value=v)
    if len(cfg.wrist) > 2:
        raise ConfigError(cfg.sources[-1], "wrist", "at most two wrist bands",
                          value=len(cfg.wrist))
    if len(cfg.sim.interval_ms) != 2 or cfg.sim.interval_ms[0] > cfg.sim.interval_ms[1]:
        raise ConfigError(origins.get("sim.interval_ms", cfg.sources[-1]), "sim.interval_ms",
                          "must be [low, high]", value=cfg.sim.interval_ms)
    _check_identity(cfg, origins)


def is_raspberry_pi() -> bool:
    try:
        return "raspberry pi" in Path("/proc/device-tree/model").read_text().lower()
    except OSError:
        return False


def default_path() -> Path:
    """The config used without ``--config``: the device-local file, else the simulated rig."""
    env = os.environ.get("WEARCAP_CONFIG")
    if env:
        return Path(env)
    if DEVICE_LOCAL.is_file():
        return DEVICE_LOCAL
    if is_raspberry_pi():
        raise ConfigError(str(DEVICE_LOCAL), "", "no device config on this Pi; write one "
                          "(first line: profile = \"pi5-imx708\" or another file in "
                          "device_configs/) or pass --config")
    return find_profile("sim", "<default>")


def load_default(path: str | Path | None = None) -> Config:
    return load(Path(path) if path is not None else default_path())
