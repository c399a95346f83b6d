"""The rig's self-diagnosis: each check passes or fails, with the figures and the fix to try.

Checks: the camera (frame rate, timestamp sanity), each wrist band (rate, clock fit and its
bound), the MCU link, the disk (write speed, free space, hours left at the configured
bitrate), NTP, and an authenticated round trip to the collector (which also tells where the
rig's sequence numbers stand there).

While the capture service runs, camera and bands are judged from its live status (it holds
the devices); otherwise selftest opens them itself for ``seconds``. The report is kept in the
spool (``selftest/``) for the sync service to upload.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.config import Config

PASS, FAIL, WARN, SKIP = "pass", "fail", "warn", "skip"
RATE_TOLERANCE = 0.10
"""Camera and band rates within 10% of the configured rate pass."""
BAND_BOUND_MAX_US = 5_000.0
"""A converged clock fit with an error bound above this is a failure (5 ms)."""
HOURS_MIN = 1.0
"""Less than this much recording left on the disk fails."""
WRITE_FACTOR = 4.0
"""The disk must write at least this many times the recording's byte rate."""
REPORTS_DIR = "selftest"
LIVE_WINDOW_S = 2.5
"""With the capture service running: how long selftest watches what the bands deliver."""


@dataclass
class Check:
    name: str
    result: str
    detail: str
    fix: str = ""
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass
class Report:
    device_id: str
    started: float
    source: str
    """"live": camera and bands judged from the running capture service; "own": opened here."""
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(c.result != FAIL for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "selftest", "device_id": self.device_id, "started": self.started,
                "seconds": round(self.seconds, 2), "source": self.source, "ok": self.ok,
                "checks": [asdict(c) for c in self.checks]}


# ---------------------------------------------------------------- camera and bands


def judge_camera(fps: float | None, want: float, *, backwards: int = 0, max_gap_frames: float
                 = 0.0, dropped: int = 0, frames: int = 0) -> Check:
    figures = {"fps": fps, "configured_fps": want, "frames": frames,
               "backwards": backwards, "max_gap_frames": round(max_gap_frames, 2),
               "dropped": dropped}
    if not frames or fps is None:
        return Check("camera", FAIL, "no frames from the camera", "check the ribbon cable and "
                     "that the camera is enabled (rpicam-hello --list-cameras); then "
                     "restart: systemctl restart wearcap-capture", figures)
    if backwards:
        return Check("camera", FAIL, f"{backwards} frame timestamp(s) went backwards",
                     "report this: the camera driver's timestamps are not monotonic", figures)
    if abs(fps - want) > RATE_TOLERANCE * want:
        return Check("camera", FAIL, f"{fps:.1f} fps, configured {want:g}",
                     "lower camera.width/height or camera.bitrate_kbps, or check what else "
                     "loads the CPU (top)", figures)
    if max_gap_frames > 3:
        return Check("camera", WARN, f"{fps:.1f} fps but a gap of {max_gap_frames:.1f} frame "
                     "periods", "watch for CPU load; a gap is recorded, not hidden", figures)
    return Check("camera", PASS, f"{fps:.1f} fps (configured {want:g}), timestamps monotonic, "
                 f"largest gap {max_gap_frames:.1f} frame periods", figures=figures)


def judge_band(name: str, want_hz: float, st: dict[str, Any] | None) -> Check:
    check = f"band {name}"
    if st is None:
        return Check(check, FAIL, "no status from this band", "restart the capture service",
                     {})
    figures = {k: st.get(k) for k in ("state", "rate_hz", "clock_converged", "clock_bound_ns",
                                      "clock_drift_ppm", "reconnects", "malformed", "gaps",
                                      "address")}
    rate = float(st.get("rate_hz") or 0.0)
    delivered = st.get("delivered_hz")
    if isinstance(delivered, (int, float)):
        # measured over the selftest's own window: a band that stopped delivering shows here
        # long before its link is declared lost
        rate = float(delivered)
        figures["delivered_hz"] = round(rate, 1)
        if rate < 0.5 * want_hz:
            return Check(check, FAIL, f"not streaming ({rate:.0f} of {want_hz:g} Hz "
                         "delivered)", f"switch the {name} band on and charge it, keep it "
                         "within a few metres; if it was replaced, pair it again: wearcap "
                         "pair --write", figures)
    if st.get("streaming") and rate == 0.0 and not st.get("samples"):
        return Check(check, WARN, "streaming, rate not measured yet",
                     "run selftest again in a few seconds", figures)
    if not st.get("streaming") or rate < 0.5 * want_hz:
        cause = st.get("absent_cause") or st.get("last_error") or (
            f"{rate:.0f} of {want_hz:g} Hz" if st.get("streaming") else st.get("state")) \
            or "unknown"
        return Check(check, FAIL, f"not streaming ({cause})",
                     f"switch the {name} band on and charge it, keep it within a few metres; "
                     f"if it was replaced, pair it again: wearcap pair --write", figures)
    if abs(rate - want_hz) > RATE_TOLERANCE * want_hz:
        return Check(check, FAIL, f"{rate:.1f} Hz, configured {want_hz:g} Hz",
                     f"check wrist[].rate_hz and wrist[].profile for the {name} band "
                     "(wearcap config check)", figures)
    bound = st.get("clock_bound_ns")
    bound_us = None if bound is None else bound / 1e3
    if not st.get("clock_converged"):
        return Check(check, WARN, f"{rate:.1f} Hz; clock fit still converging"
                     + ("" if bound_us is None else f" (bound {bound_us / 1e3:.1f} ms)"),
                     "run selftest again after a minute of recording (--seconds 60)", figures)
    if bound_us is not None and bound_us > BAND_BOUND_MAX_US:
        return Check(check, FAIL, f"clock fit bound {bound_us / 1e3:.1f} ms",
                     "move the band closer to the rig or away from Wi-Fi interference",
                     figures)
    return Check(check, PASS, f"{rate:.1f} Hz (configured {want_hz:g}), clock fit bound "
                 + ("?" if bound_us is None else f"{bound_us:.0f} us"), figures=figures)


def judge_mcu(st: dict[str, Any] | None) -> Check:
    if st is None:
        return Check("mcu", FAIL, "the capture service has no MCU source",
                     "check mcu.enabled and mcu.port, then restart the capture service")
    figures = {k: st.get(k) for k in ("streaming", "pongs", "stale_pongs", "bound_ns",
                                      "drift_ppm", "bad_frames", "battery", "incompatible",
                                      "rtt_ms_p50", "rtt_ms_min", "rtt_ms_max",
                                      "rtt_samples")}
    if not st.get("streaming"):
        why = st.get("absent_cause") or st.get("last_error") or "down"
        return Check("mcu", FAIL, f"no link ({why})", "check mcu.port (ls "
                     "/dev/serial/by-id/) and the cable; an MCU that speaks another protocol "
                     "needs new firmware", figures)
    if not st.get("pongs") or st.get("rtt_ms_p50") is None:
        return Check("mcu", FAIL, "link up but no ping answered",
                     "the MCU firmware does not answer pings: update it", figures)
    bound = st.get("bound_ns")
    return Check("mcu", PASS, f"link up, ping round trip {rtt_text(st)}, clock bound "
                 + ("?" if bound is None else f"{bound / 1e3:.0f} us"), figures=figures)


def rtt_text(st: dict[str, Any]) -> str:
    """'0.41 ms p50, 0.38-3.20 ms over 100 pings' from an MCU status (McuSource.rtt_figures)."""
    if st.get("rtt_ms_p50") is None:
        return "-"
    return (f"{st['rtt_ms_p50']:.2f} ms p50, {st['rtt_ms_min']:.2f}-{st['rtt_ms_max']:.2f} ms "
            f"over {st['rtt_samples']} pings")


def delivered(first: dict[str, Any], later: dict[str, Any] | None) -> dict[str, float]:
    """Samples per second each stream delivered between two live snapshots."""
    if not later:
        return {}
    dt = float(later.get("updated", 0)) - float(first.get("updated", 0))
    if dt <= 0.5:
        return {}
    a = {s.get("name"): s for s in first.get("streams") or []}
    out = {}
    for s in later.get("streams") or []:
        n0, n1 = (a.get(s.get("name")) or {}).get("samples"), s.get("samples")
        if isinstance(n0, int) and isinstance(n1, int):
            out[str(s.get("name"))] = (n1 - n0) / dt
    return out


def from_live(cfg: Config, live: dict[str, Any],
              later: dict[str, Any] | None = None) -> list[Check]:
    """Camera and bands as the running capture service sees them (``later``: a second
    snapshot, to measure what each band delivered in between)."""
    out: list[Check] = []
    rates = delivered(live, later)
    if later:
        live = later
    cam = live.get("camera")
    if cfg.camera.backend != "none":
        if cam is None:
            out.append(Check("camera", FAIL, "the capture service has no camera open",
                             "see journalctl -u wearcap-capture", {}))
        else:
            out.append(judge_camera(cam.get("fps"), cfg.camera.fps,
                                    dropped=int(cam.get("dropped") or 0),
                                    frames=int(cam.get("frames") or 0)))
    streams = {s.get("name"): s for s in live.get("streams") or []}
    for w in cfg.wrist:
        st = streams.get(w.name)
        if st is not None and w.name in rates:
            st = {**st, "delivered_hz": rates[w.name]}
        out.append(judge_band(w.name, w.rate_hz, st))
    if cfg.mcu.enabled:
        out.append(judge_mcu(streams.get("mcu")))
    return out


def measure_own(cfg: Config, seconds: float) -> list[Check]:
    """Open the camera and the bands here for ``seconds`` (no capture service running)."""
    import contextlib

    from agent.timeline import monotonic_ns

    out: list[Check] = []
    with contextlib.ExitStack() as stack:
        if cfg.sim.enabled and cfg.wrist:
            from agent.sim.rig import SimRig

            stack.enter_context(SimRig(cfg))
        camera = None
        if cfg.camera.backend != "none":
            from agent.camera.open import open_camera

            camera = open_camera(cfg.camera, monotonic_ns)
            camera.start()
            stack.callback(camera.stop)
        from agent.commands.run import _mcu_sources, _sim_mcu
        from agent.wrist.source import WristSource

        bands = [WristSource(w, cfg.ble) for w in cfg.wrist]
        sim_mcu = stack.enter_context(_sim_mcu(cfg))
        mcus = _mcu_sources(cfg, cfg.spool_path, sim_mcu)
        for b in [*bands, *mcus]:
            b.start()
            stack.callback(b.stop)
        stamps: list[int] = []
        dropped = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if camera is not None:
                camera.wait(0.05)
                for f in camera.poll(64):
                    stamps.append(f.host_ts_ns)
                    dropped += f.dropped_before
            else:
                time.sleep(0.05)
            for src in [*bands, *mcus]:
                src.drain()
        if camera is not None:
            out.append(_camera_check(stamps, cfg.camera.fps, dropped))
        for w, b in zip(cfg.wrist, bands, strict=True):
            out.append(judge_band(w.name, w.rate_hz, b.status()))
        for m in mcus:
            out.append(judge_mcu(m.status()))
    return out


def _camera_check(stamps: list[int], want: float, dropped: int) -> Check:
    if len(stamps) < 2:
        return judge_camera(None, want, frames=len(stamps))
    deltas = [b - a for a, b in itertools.pairwise(stamps)]
    backwards = sum(1 for d in deltas if d <= 0)
    # The first frames come in a burst while the encoder fills: judge the steady part.
    steady = stamps[len(stamps) // 5:]
    fps = (len(steady) - 1) * 1e9 / (steady[-1] - steady[0]) if len(steady) > 1 else None
    period = 1e9 / want
    return judge_camera(None if fps is None else round(fps, 2), want, backwards=backwards,
                        max_gap_frames=max(deltas) / period, dropped=dropped,
                        frames=len(stamps))


# ---------------------------------------------------------------- MCU, disk, NTP


def check_mcu(cfg: Config) -> Check:
    """Without an MCU there is nothing to check (with one, judge_mcu does)."""
    return Check("mcu", SKIP, "no head MCU configured (mcu.enabled = false)")


def bytes_per_second(cfg: Config) -> float:
    """What recording writes: the video bitrate plus the wrist and frame-timing streams."""
    video = cfg.camera.bitrate_kbps * 1000 / 8 if cfg.camera.backend != "none" else 0.0
    wrist = sum(w.rate_hz * 8 for w in cfg.wrist)  # <= 8 B per stored sample
    return video * 1.05 + wrist + 2_000


def check_disk(spool: Path, cfg: Config, probe_bytes: int = 16 << 20) -> Check:
    rate = bytes_per_second(cfg)
    reserve = cfg.spool.reserve_mb * 1024 * 1024
    try:
        spool.mkdir(parents=True, exist_ok=True)
        usage = shutil.disk_usage(spool)
    except OSError as exc:
        return Check("disk", FAIL, f"cannot use the spool {spool}: {exc.strerror or exc}",
                     "check spool.path and its owner (the wearcap user)", {})
    free = usage.free
    hours = max(0, free - reserve) / rate / 3600
    figures: dict[str, Any] = {"spool": str(spool), "free_bytes": free, "reserve_bytes": reserve,
                               "record_bytes_per_s": round(rate), "hours_left": round(hours, 2)}
    size = min(probe_bytes, max(0, (free - reserve) // 4))
    speed = None
    if size >= 1 << 20:
        probe = spool / ".selftest-write"
        block = os.urandom(1 << 20)
        try:
            t0 = time.perf_counter()
            with probe.open("wb") as fh:
                for _ in range(size >> 20):
                    fh.write(block)
                fh.flush()
                os.fsync(fh.fileno())
            speed = (size >> 20 << 20) / (time.perf_counter() - t0)
        except OSError as exc:
            return Check("disk", FAIL, f"writing to the spool failed: {exc.strerror or exc}",
                         "the SD card may be failing or full: replace it, then wearcap "
                         "provision --reprovision", figures)
        finally:
            probe.unlink(missing_ok=True)
        figures["write_bytes_per_s"] = round(speed)
    free_txt = f"{free / 1e9:.2f} GB free, {hours:.1f} h of recording left"
    if hours < HOURS_MIN:
        return Check("disk", FAIL, f"nearly full: {free_txt} (reserve "
                     f"{cfg.spool.reserve_mb} MB)",
                     "let the rig upload (wearcap sync --once; verified segments are then "
                     "evicted), or free space on the card, or use a larger one", figures)
    if speed is None:
        return Check("disk", WARN, f"{free_txt}; too little room to measure the write speed",
                     "free space on the card", figures)
    if speed < WRITE_FACTOR * rate:
        return Check("disk", FAIL, f"writes {speed / 1e6:.1f} MB/s, recording needs "
                     f"{rate / 1e6:.2f} MB/s with headroom", "use a faster card (A1/A2, "
                     "U3) or lower camera.bitrate_kbps", figures)
    return Check("disk", PASS, f"{free_txt}; writes {speed / 1e6:.0f} MB/s "
                 f"({speed / rate:.0f}x what recording needs)", figures=figures)


TIME_ERROR = 5


def kernel_clock() -> tuple[int, float] | None:
    """adjtimex(2) state and the kernel's maximum error (s), or None if unavailable."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    if not hasattr(libc, "adjtimex"):
        return None
    buf = ctypes.create_string_buffer(512)  # struct timex, modes = 0: read only
    state = int(libc.adjtimex(buf))
    if state < 0:
        return None
    maxerror_us = ctypes.c_long.from_buffer(buf, 3 * ctypes.sizeof(ctypes.c_long)).value
    return state, maxerror_us / 1e6


def check_ntp(cfg: Config) -> Check:
    k = kernel_clock()
    if k is None:
        return Check("ntp", WARN, "cannot read the kernel clock state", "timedatectl status")
    state, maxerror = k
    figures = {"adjtimex_state": state, "maxerror_s": maxerror}
    if state != TIME_ERROR:
        return Check("ntp", PASS, f"system clock synchronized (max error {maxerror * 1e3:.0f}"
                     " ms)", figures=figures)
    # Recordings are timed on the monotonic clock; wall time only dates them.
    result = WARN if cfg.sim.enabled else FAIL
    return Check("ntp", result, "system clock not synchronized by NTP (wall-clock dates of "
                 "recordings may be off)", "timedatectl set-ntp true, and check that the "
                 "network reaches an NTP server (timedatectl timesync-status)", figures)


# ---------------------------------------------------------------- collector


def collector_base(url: str) -> str:
    base = url.rstrip("/")
    return base[: -len("/files")] if base.endswith("/files") else base


def check_collector(cfg: Config, spool: Path, timeout: float = 10.0) -> Check:
    import httpx

    from agent.commands.sync import read_token
    from agent.errors import ConfigError

    url = cfg.sync.url
    try:
        token = read_token(cfg)
    except ConfigError as exc:
        return Check("collector", FAIL, f"no token: {exc.problem}",
                     "provision the rig: wearcap provision --collector URL --code CODE",
                     {"url": url})
    base = collector_base(url)
    target = f"{base}/devices/{cfg.device.id}/segments"
    t0 = time.perf_counter()
    try:
        r = httpx.get(target, headers={"Authorization": f"Bearer {token}",
                                       "Tus-Resumable": "1.0.0"}, timeout=timeout)
    except httpx.HTTPError as exc:
        return Check("collector", FAIL, f"unreachable at {url}: {exc}",
                     "check the network (ping the collector's host) and sync.url; uploads "
                     "resume on their own when it is back", {"url": url})
    rtt = time.perf_counter() - t0
    figures: dict[str, Any] = {"url": url, "round_trip_ms": round(rtt * 1e3, 1),
                               "status": r.status_code}
    if r.status_code in (401, 403):
        return Check("collector", FAIL, f"the collector refuses this rig's token (HTTP "
                     f"{r.status_code})", "the device was revoked or re-enrolled elsewhere: "
                     "provision again with a new code (wearcap provision --code CODE)",
                     figures)
    if r.status_code == 404:
        return Check("collector", FAIL, f"device {cfg.device.id} is not enrolled there",
                     "provision the rig: wearcap provision --code CODE", figures)
    if r.status_code != 200:
        return Check("collector", FAIL, f"unexpected answer HTTP {r.status_code}",
                     "check sync.url points at a wearcap collector's /files/", figures)
    try:
        report = r.json()
    except ValueError:
        report = {}
    highest = report.get("highest_seq") if isinstance(report, dict) else None
    figures["highest_seq"] = highest
    figures["verified"] = report.get("verified") if isinstance(report, dict) else None
    from agent.record.spool import Spool

    next_seq = Spool(spool, cfg.device.id).last_seq() + 1 if (spool / "sealed").is_dir() \
        else None
    figures["spool_next_seq"] = next_seq
    if isinstance(highest, int) and next_seq is not None and next_seq <= highest:
        return Check("collector", FAIL, f"the spool would record seq {next_seq}, but the "
                     f"collector already holds up to {highest}: uploads would be refused",
                     "store the sequence floor: wearcap provision --reprovision", figures)
    return Check("collector", PASS, f"authenticated round trip {rtt * 1e3:.0f} ms; "
                 f"{figures['verified'] or 0} segment(s) verified there", figures=figures)


# ---------------------------------------------------------------- all of it


def run_all(cfg: Config, spool: Path, *, seconds: float = 5.0,
            live: dict[str, Any] | None = None) -> Report:
    t0 = time.time()
    use_live = bool(live and live.get("fresh"))
    report = Report(cfg.device.id, t0, "live" if use_live else "own")
    if use_live and live is not None:
        from agent import livestatus

        time.sleep(LIVE_WINDOW_S)
        later = livestatus.find_capture()
        if later is not None and later.get("pid") != live.get("pid"):
            later = None
        report.checks += from_live(cfg, live, later)
    elif cfg.camera.backend != "none" or cfg.wrist or cfg.mcu.enabled:
        report.checks += measure_own(cfg, seconds)
    if not cfg.mcu.enabled:
        report.checks.append(check_mcu(cfg))
    report.checks.append(check_disk(spool, cfg))
    report.checks.append(check_ntp(cfg))
    report.checks.append(check_collector(cfg, spool))
    report.seconds = time.time() - t0
    return report


def save(report: Report, spool: Path) -> Path | None:
    """Keep the report in the spool (``selftest/<time>.json``) for the next sync."""
    from agent import durable

    d = spool / REPORTS_DIR
    name = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(report.started)) + ".json"
    try:
        d.mkdir(parents=True, exist_ok=True)
        durable.write_atomic(d / name, json.dumps(report.to_dict(), indent=1).encode())
    except OSError:
        return None
    return d / name
