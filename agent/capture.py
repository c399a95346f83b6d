"""The capture service: camera and sources in, sealed segments out.

One writer loop (the caller's thread) polls the camera, drains the sources every
``drain_seconds``, writes, closes a chunk and fsyncs every ``chunk_seconds``, rolls at
keyframes and seals. Everything it touches is injected (camera, sources, spool, clock,
notify, stop event), so tests drive it with a real encoder on a controlled timeline.

On start every leftover ``.part`` is recovered. ``stop`` (set by SIGINT/SIGTERM) ends the
loop; the camera is stopped, its last frames and the sources' last messages are written and
the open segment is sealed. A full disk seals what is open and raises DiskFullError.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from agent import heap, sdnotify
from agent.camera.base import Camera, EncodedFrame
from agent.errors import DiskFullError
from agent.livestatus import Publisher
from agent.progress import LiveFigures, live_status, progressing
from agent.record.recover import Recovery, recover_all
from agent.record.roller import Decision, RollPolicy
from agent.record.schemas import VIDEO_TOPIC
from agent.record.segment import SegmentHeader, SegmentWriter
from agent.record.spool import SealedSegment, Spool
from agent.sources import GAP_TOPIC, Message, Source
from agent.timeline import Clock, ClockAnchor, monotonic_ns, read_anchor

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CaptureSettings:
    device_id: str
    config_digest: str
    segment_seconds: float = 60.0
    chunk_seconds: float = 1.0
    chunk_bytes: int = 4 << 20
    drain_seconds: float = 0.05
    disk_check_seconds: float = 5.0
    watchdog_seconds: float = 1.0
    duration: float | None = None
    margin_bytes: int = 8 << 20
    """Room a segment's next few seconds need, checked with the reserve."""
    tune_heap: bool = True
    """Keep large transient blocks out of the heap, trim it at each roll, and keep what is
    alive once recording runs out of the cyclic collector's passes (agent.heap)."""
    first_frame_warn_seconds: float = 5.0
    pending_max: int = 1024
    """Source messages held while no segment is open (before the first frame: about 30 s
    of two wrist bands). Beyond it messages are dropped and written as a gap per topic."""
    pause_motion: bool = False
    """While the wearer has paused: also hold back the motion (IMU) streams."""


@dataclass
class CaptureResult:
    sealed: list[SealedSegment] = field(default_factory=list)
    recovered: list[Recovery] = field(default_factory=list)
    frames: int = 0
    gaps: int = 0
    first_frame_ns: int | None = None
    paused_frames: int = 0
    """Frames withheld because the wearer had paused (never written)."""
    events: list[str] = field(default_factory=list)
    """The wearer's actions applied, in order (pause, resume, annotation, discard-...)."""
    stopped_for: str = ""
    """Why the loop stopped on its own ("low-battery"), else empty."""


def _stderr_status(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class CaptureService:
    def __init__(self, settings: CaptureSettings, spool: Spool, camera: Camera | None,
                 sources: list[Source], *, clock: Clock = monotonic_ns,
                 notify: Callable[[str], Any] = sdnotify.notify,
                 status: Callable[[str], None] = _stderr_status,
                 anchor: Callable[[], ClockAnchor] | None = None,
                 stop: threading.Event | None = None, wearer: Any = None,
                 publisher: Publisher | None = None) -> None:
        self.s = settings
        self.spool = spool
        self.camera = camera
        self.sources = sources
        self.clock = clock
        self.notify = notify
        self.status = status
        self.anchor = anchor or (lambda: read_anchor(clock))
        self.stop = stop or threading.Event()
        self.policy = RollPolicy(settings.segment_seconds)
        self._frame_taps: list[Callable[[int, int], Any]] = [
            tap for src in sources if callable(tap := getattr(src, "on_frame", None))]
        self.result = CaptureResult()
        self._seg: SegmentWriter | None = None
        self._fh: IO[bytes] | None = None
        self._pending: list[Message] = []
        self._overflow: dict[str, list[int]] = {}  # topic -> [dropped, first_ns, last_ns]
        self._ready = False
        self._stopping = False
        self._last_index: int | None = None
        self._last_frame_ns: int | None = None
        # The wearer's controls (agent.mcu.wearer.Wearer: poll(now) -> actions), or None.
        self.wearer = wearer
        self._paused_ns: int | None = None  # paused since (host ns)
        self._resume_ns: int | None = None  # resumed at: frames before it, and until the
        self._withheld = 0                  # next keyframe, are never written
        self._withheld_motion: dict[str, list[int]] = {}
        self._sealed_spans: list[tuple[str, int, int]] = []
        self.publisher = publisher
        self._live = LiveFigures()

    # ------------------------------------------------------------ segments
    def _open(self) -> None:
        self.spool.check_space(self.s.margin_bytes)
        seq = self.spool.next_seq()
        prev_seq, prev_sha = self.spool.chain()
        header = SegmentHeader(self.s.device_id, seq, prev_seq, prev_sha, self.s.config_digest,
                               self.anchor())
        channels = [c for src in self.sources for c in src.channels()]
        if self.wearer is not None:
            from agent.mcu.records import events_channel

            channels.append(events_channel())
        meta = {src.name: src.segment_metadata() for src in self.sources}
        self._fh = self.spool.open_part(seq)
        self._seg = SegmentWriter(self._fh, header, sources_metadata=meta, channels=channels,
                                  video=self.camera is not None, chunk_bytes=self.s.chunk_bytes)
        self._seg.continue_from(self._last_index, self._last_frame_ns)
        for m in self._pending:
            self._seg.write_message(m)
        self._pending.clear()
        for topic, (n, first, last) in self._overflow.items():
            self._seg.write_gap(topic, first, last, -1,
                                f"pending-overflow: {n} messages before the first frame")
        self._overflow.clear()
        self._last_ckpt = self.clock()

    def _seal(self) -> None:
        seg, fh = self._seg, self._fh
        if seg is None or fh is None:
            return
        self._seg = self._fh = None
        sha, size = seg.close()
        sealed = self.spool.seal(seg.header.seq, fh, sha, size)
        self.result.sealed.append(sealed)
        if seg.first_ns is not None:
            self._sealed_spans.append((sealed.id, seg.first_ns, seg.last_ns or seg.first_ns))
        if self.s.tune_heap:
            heap.trim()
        self.result.gaps += seg.gaps
        dur = ((seg.last_ns or 0) - (seg.first_ns or 0)) / 1e9
        self.status(f"sealed {sealed.id}: {seg.frames} frames, {seg.gaps} gaps, "
                    f"{size / 1e6:.1f} MB, {dur:.1f} s{self._absent()}")

    def _absent(self) -> str:
        """Sources not streaming right now, with why, for the status line."""
        if self._stopping:
            return ""
        out = []
        for src in self.sources:
            try:
                st = src.status()
            except Exception:  # a status that cannot be read is not worth a crash
                continue
            if st.get("streaming") is False:
                out.append(f"{src.name} absent {float(st.get('absent_s') or 0):.0f} s "
                           f"({st.get('absent_cause') or 'unknown'})")
        return "; " + ", ".join(out) if out else ""

    # ------------------------------------------------------------ input
    def _withhold(self, f: EncodedFrame) -> bool:
        """Paused, or resumed but before the resume press or the first keyframe after it:
        the frame is dropped here, before the writer (no pre-roll). Continuity is carried
        on, so the writer does not call the pause a loss; the pause's gap says it."""
        if self._paused_ns is None and self._resume_ns is None:
            return False
        resumed = self._paused_ns is None and self._resume_ns is not None
        if resumed and f.keyframe and f.host_ts_ns >= (self._resume_ns or 0):
            self._resume_ns = None
            self._end_pause_gap(f.host_ts_ns)
            return False
        self._withheld += 1
        self.result.paused_frames += 1
        self._last_index, self._last_frame_ns = f.index, f.host_ts_ns
        if self._seg is not None:
            self._seg.continue_from(f.index, f.host_ts_ns)
        return True

    def _end_pause_gap(self, end_ns: int) -> None:
        start = self._pause_started
        if self._seg is not None and start is not None:
            self._seg.write_gap(VIDEO_TOPIC, start, end_ns, self._withheld, "paused")
        self._withheld = 0
        self._pause_started = None

    _pause_started: int | None = None

    def _on_frame(self, f: EncodedFrame) -> None:
        if self._withhold(f):
            return
        d = self.policy.on_frame(f.host_ts_ns, f.keyframe)
        discard = self._discard_pending if f.keyframe and self._seg is not None else None
        if discard is not None:
            d = Decision.ROLL
            self._discard_pending = None
        if d is Decision.REQUEST_KEYFRAME and self.camera is not None:
            self.camera.request_keyframe()
        elif d is Decision.ROLL:
            self._roll()
        if self._seg is None:
            if not f.keyframe:
                log.warning("segment starts on a non-key frame %d", f.index)
            self._open()
            self.policy.opened(f.host_ts_ns)
        assert self._seg is not None
        self._seg.write_frame(f)
        for tap in self._frame_taps:  # e.g. the head MCU matches the frame to its strobe
            tap(f.index, f.host_ts_ns)
        self._last_index, self._last_frame_ns = f.index, f.host_ts_ns
        if discard is not None:
            self._write_discard(discard, f.host_ts_ns)
        self.result.frames += 1
        if self.result.first_frame_ns is None:
            self.result.first_frame_ns = f.host_ts_ns
        if not self._ready:
            self._ready = True
            self.notify("READY=1")
            if self.s.tune_heap:
                heap.freeze()  # what recording runs on is in place (agent/heap.py)

    def _roll(self) -> None:
        """Seal at a roll: sources first close what they hold (batches, the part of an open
        gap) so it lands in the segment it belongs to, then the segment is sealed."""
        self._flush_sources()
        self._seal()

    def _flush_sources(self) -> None:
        for src in self.sources:
            flush = getattr(src, "flush", None)
            if flush is not None:
                flush()
        self._drain()

    def _drain(self) -> None:
        for src in self.sources:
            for m in src.drain():
                if (self.s.pause_motion and self._paused_ns is not None
                        and m.topic.endswith("/imu")):
                    w = self._withheld_motion.setdefault(m.topic, [0, m.log_time_ns])
                    w[0] += 1
                    continue
                if self._seg is None:
                    self._hold(m)
                else:
                    self._seg.write_message(m)

    def _hold(self, m: Message) -> None:
        """Keep a message until the first segment opens; past ``pending_max`` count it."""
        if len(self._pending) < self.s.pending_max:
            self._pending.append(m)
            return
        t = m.log_time_ns
        o = self._overflow.get(m.topic)
        if o is None:
            self._overflow[m.topic] = [1, t, t]
        else:
            o[0] += 1
            o[1] = min(o[1], t)
            o[2] = max(o[2], t)

    def _poll_camera(self, wait: float) -> int:
        cam = self.camera
        if cam is None:
            self.stop.wait(wait)
            now = self.clock()
            d = self.policy.on_tick(now)
            if d is Decision.ROLL:
                self._roll()
            if self._seg is None:
                self._open()
                self.policy.opened(now)
                if not self._ready:
                    self._ready = True
                    self.notify("READY=1")
                    if self.s.tune_heap:
                        heap.freeze()
            return 0
        cam.wait(wait)
        frames = cam.poll(64)
        for f in frames:
            self._on_frame(f)
        return len(frames)

    # ------------------------------------------------------------ the wearer
    def _wearer(self, now: int) -> None:
        for a in self.wearer.poll(now):
            self.result.events.append(a.kind)
            self._event(a.kind, a.host_ns, a.detail)
            if a.kind == "pause" and self._paused_ns is None:
                self._paused_ns = a.host_ns
                if self._resume_ns is None:
                    self._pause_started = a.host_ns
                self._resume_ns = None
                self.status("paused by the wearer")
            elif a.kind == "resume" and self._paused_ns is not None:
                self._paused_ns = None
                self._resume_ns = a.host_ns
                if self.camera is not None:
                    self.camera.request_keyframe()  # resume on an IDR, at once
                self._motion_gaps(a.host_ns)
                self.status("resumed by the wearer")
            elif a.kind == "discard-requested":
                # Whole segments only: the one holding the press is sealed at the next IDR
                # (at once when no frame is coming), then the request names every sealed
                # segment that overlaps the window.
                withholding = self._paused_ns is not None or self._resume_ns is not None
                if self.camera is not None and self._seg is not None and not withholding:
                    self._discard_pending = a
                    self.camera.request_keyframe()
                else:
                    self._roll()
                    self._write_discard(a, now)
            elif a.kind == "low-battery":
                self.status(f"battery low ({a.detail.get('percent')} %): sealing and "
                            "stopping before brown-out")
                self.result.stopped_for = "low-battery"

    _discard_pending: Any = None

    def _write_discard(self, a: Any, now: int) -> None:
        path = self.wearer.request_discard(a, self._sealed_spans)
        self._event("discard-written", now, {"request": path.name})

    def _event(self, kind: str, host_ns: int, detail: dict[str, Any]) -> None:
        from agent.mcu.records import event

        m = event(kind, host_ns, **detail)
        if self._seg is None:
            self._hold(m)
        else:
            self._seg.write_message(m)

    def _motion_gaps(self, end_ns: int) -> None:
        for topic, (n, first) in self._withheld_motion.items():
            m = Message(GAP_TOPIC, first, {"stream": topic, "start_ns": first,
                                           "end_ns": end_ns, "lost": -1,
                                           "cause": f"paused: {n} batches withheld"})
            if self._seg is None:
                self._hold(m)
            else:
                self._seg.write_message(m)
        self._withheld_motion.clear()

    def _roll_on_time(self, now: int) -> None:
        """While paused no frame comes to roll at: roll on the clock, so segments stay
        their length and motion and events keep being sealed."""
        if self._seg is None:
            return
        if self.policy.on_tick(now) is Decision.ROLL:
            self._roll()
            self._open()
            self.policy.opened(now)
            if self._seg is not None:
                self._seg.continue_from(self._last_index, self._last_frame_ns)

    # ------------------------------------------------------------ live status
    def _publish(self, now: int) -> None:
        """The live status (agent.livestatus) and systemd's STATUS= line, once a second."""
        if self.publisher is None or not self.publisher.due():
            return
        doc = live_status(self, now)
        self.publisher.publish(doc)
        line = doc.get("summary", "")
        if line and line != self._live.last_line:
            self._live.last_line = line
            self.notify(f"STATUS={line}")

    # ------------------------------------------------------------ loop
    def run(self) -> CaptureResult:
        if self.s.tune_heap:
            heap.pin_mmap_threshold()
        self.spool.lock()
        try:
            self.result.recovered = recover_all(self.spool)
            for r in self.result.recovered:
                self.status(f"recovered {r.id}: {r.outcome}, {r.frames} frames"
                            + (f" ({r.reason})" if r.reason else ""))
            try:
                self.spool.check_space(self.s.margin_bytes)
            except DiskFullError as exc:
                self._fault_at_start(exc)
                raise
            self._loop()
        finally:
            if self.s.tune_heap:
                heap.thaw()
            self.spool.unlock()
        return self.result

    def _loop(self) -> None:
        started: list[Any] = []
        t0 = self.clock()
        end = t0 + int(self.s.duration * 1e9) if self.s.duration is not None else None
        last_drain = last_disk = last_dog = t0
        warned = False
        self._last_ckpt = t0
        try:
            if self.camera is not None:
                self.camera.start()
                started.append(self.camera)
            for src in self.sources:
                src.start()
                started.append(src)
            while not self.stop.is_set():
                self._poll_camera(self.s.drain_seconds)
                now = self.clock()
                if now - last_drain >= self.s.drain_seconds * 1e9:
                    self._drain()
                    last_drain = now
                    if self.wearer is not None:
                        self._wearer(now)
                        if self.result.stopped_for:
                            break
                if self._paused_ns is not None or self._resume_ns is not None:
                    self._roll_on_time(now)
                if self._seg is not None and now - self._last_ckpt >= self.s.chunk_seconds * 1e9:
                    # Sources close their batches first, so nothing waits in memory for longer
                    # than one chunk: a crash loses at most chunk_seconds of any stream.
                    self._flush_sources()
                    self._seg.checkpoint()
                    self._last_ckpt = now
                if now - last_dog >= self.s.watchdog_seconds * 1e9:
                    # Progress, not liveness: pinged from the writer loop only, and only while
                    # the open segment checkpoints (agent.progress).
                    if self._ready and progressing(self._seg is not None, now - self._last_ckpt,
                                                   self.s.chunk_seconds, self.s.watchdog_seconds):
                        self.notify("WATCHDOG=1")
                    last_dog = now
                    self._publish(now)
                if now - last_disk >= self.s.disk_check_seconds * 1e9:
                    self.spool.check_space(self.s.margin_bytes // 4)
                    last_disk = now
                if (not self._ready and not warned and self.camera is not None
                        and now - t0 >= self.s.first_frame_warn_seconds * 1e9):
                    warned = True
                    self.status(f"no camera frame after {self.s.first_frame_warn_seconds:g} s; "
                                f"holding up to {self.s.pending_max} source messages, the "
                                "rest are written as gaps")
                if end is not None and now >= end:
                    break
        except BaseException as exc:
            self._show_fault(exc)
            self._shutdown(started, failing=True)
            raise
        self._shutdown(started, failing=False)

    def _fault_at_start(self, exc: BaseException) -> None:
        """Nothing is started yet: open the head MCU alone, long enough to show the fault."""
        from agent.mcu.source import McuSource

        mcus = [s for s in self.sources if isinstance(s, McuSource)]
        if not mcus or self.wearer is None:
            return
        try:
            mcus[0].start()
        except Exception as err:
            self.status(f"could not open the MCU to show the fault: {err}")
            return
        try:
            self._show_fault(exc)
        finally:
            mcus[0].stop()

    def _show_fault(self, exc: BaseException) -> None:
        """A failure that stops recording (disk full, camera failed, ...) is the wearer's
        fault state: the LED shows it before the sources close (agent.mcu.wearer)."""
        if isinstance(exc, (KeyboardInterrupt, SystemExit)) or self.wearer is None:
            return
        show = getattr(self.wearer, "show_fault", None)
        if show is None:
            return
        try:
            show(str(exc) or type(exc).__name__)
        except Exception as err:  # the LED is not worth hiding the failure that stopped us
            self.status(f"could not show the fault on the LED: {err}")

    def _show_stopped(self) -> None:
        """A clean stop: the LED leaves "recording" before the MCU is told bye (the wearer's
        ``show_stopped``; a low battery keeps its own row)."""
        show = getattr(self.wearer, "show_stopped", None)
        if show is None:
            return
        try:
            show()
        except Exception as err:  # the LED is not worth failing a clean stop for
            self.status(f"could not show the stop on the LED: {err}")

    def _shutdown(self, started: list[Any], failing: bool) -> None:
        """Stop inputs, write what they still hold, seal. When ``failing``, the error that
        stopped the loop wins; otherwise the first error here is raised after sealing."""
        self.notify("STOPPING=1")
        self._stopping = True  # sources are stopped on purpose now: not "absent"
        if not failing:
            self._show_stopped()
        if self.publisher is not None:
            self.publisher.clear()
        stop_ns = self.clock()
        err: BaseException | None = None
        for thing in reversed(started):
            try:
                thing.stop()
            except Exception as exc:
                log.error("stopping %s: %s", thing, exc)
                err = err or exc
        try:
            if self.camera is not None and self.camera in started:
                deadline = time.monotonic() + 2.0
                while time.monotonic() < deadline:
                    frames = self.camera.poll(64)
                    if not frames:
                        break
                    for f in frames:
                        self._on_frame(f)
            end_ns = max(stop_ns, self._last_frame_ns or 0)
            for src in self.sources:  # a stream that ends earlier says why, in a gap
                end_at = getattr(src, "end_at", None)
                if end_at is not None:
                    end_at(end_ns)
            self._drain()
            if self._seg is None and (self._pending or self._overflow):
                self._open()  # messages but no frame: they still get a segment
        except Exception as exc:
            err = err or exc
        try:
            self._seal()
        except Exception as exc:
            # The part file stays in active/ and is recovered on the next start.
            log.error("could not seal the open segment: %s", exc)
            err = err or exc
        if err is not None and not failing:
            raise err
