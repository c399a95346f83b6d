"""The sync service loop: discover, decide, upload oldest first, back off, retain, report.

Runs forever in service mode (``wearcap sync``) or until the backlog is drained or stuck
(``--once``). Everything it touches is injected: the HTTP client, the clock, the sleep, the
random source for jitter and the probes that observe the situation.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import random
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from agent import backoff, durable, sdnotify
from agent.config import Config
from agent.errors import SyncError
from agent.sync import policy, retention, tus
from agent.sync.ballast import BALLAST_NAME, LOW_FREE, Ballast, disk_free, is_disk_full
from agent.sync.state import PENDING, State
from agent.sync.uploader import Stopped, Uploader, timeouts
from agent.sync.watcher import Found, Watcher, scan

log = logging.getLogger(__name__)

STATUS_FILE = "sync-status.json"
ONCE_PROBES = 3
"""With --once: failed probes of the collector before giving up (one lost packet is not
"unreachable")."""
STATUS_EVERY = 10.0
"""Seconds between status-file rewrites when nothing changed (spares the SD card)."""


@dataclass
class Probes:
    """What the service observes besides the collector; each is a no-argument function."""

    networks: Callable[[], tuple[str, ...]] = policy.networks
    battery: Callable[[], bool | None] = lambda: None
    recording: Callable[[], bool] = lambda: False


@dataclass
class Summary:
    verified: list[str] = field(default_factory=list)
    evicted: list[str] = field(default_factory=list)
    left: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""
    bytes_sent: int = 0
    retries: int = 0
    repairs: int = 0
    ballast_released: int = 0
    """Times the service released its ballast because the disk was full."""
    """Uploads the server held with wrong bytes, found, deleted and sent again."""
    errors: list[str] = field(default_factory=list)
    """The last few failure (and repair) reasons, newest last."""
    discarded: list[str] = field(default_factory=list)
    """Segments the wearer discarded that the collector confirmed purged in this run."""

    @property
    def ok(self) -> bool:
        return not self.left

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "verified": self.verified, "evicted": self.evicted,
                "left": self.left, "reason": self.reason, "bytes_sent": self.bytes_sent,
                "retries": self.retries, "repairs": self.repairs,
                "ballast_released": self.ballast_released, "errors": self.errors,
                "discarded": self.discarded}


class SyncService:
    def __init__(self, cfg: Config, *, spool: Path, token: str, once: bool = False,
                 client: httpx.Client | None = None, probes: Probes | None = None,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None,
                 on_progress: Callable[[str, int, int], None] | None = None,
                 watch: bool = True, sleep: Callable[[float], None] | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        """``clock`` (wall time: schedules, verification and eviction times), ``monotonic``
        (intervals: watchdog and status pacing) and ``sleep`` are injectable: a test drives
        the loop through hours of controlled time. Without ``sleep``, the service sleeps on
        an event that :meth:`stop` and newly sealed segments interrupt."""
        self._stop_flag = threading.Event()
        self._wake = threading.Event()
        self.cfg, self.sc = cfg, cfg.sync
        self.spool = spool
        self.once = once
        self.watch = watch and not once
        self.clock = clock
        self.monotonic = monotonic
        self._sleep_fn = sleep
        self.rng = rng or random.Random()
        self.retry_policy = backoff.Policy(first_s=self.sc.backoff_base,
                                           cap_s=self.sc.backoff_cap)
        self.sealed = spool / "sealed"
        self.ballast = Ballast(spool / BALLAST_NAME)
        self.ballast_released = 0
        self.state = self._open_state(Path(os.path.expanduser(self.sc.state_db))
                                      if self.sc.state_db else spool / "sync.sqlite3")
        self.probes = probes or self._default_probes()
        self.rules = policy.Rules(tuple(self.sc.allowed_networks), self.sc.only_while_charging,
                                  self.sc.charging_unknown_allows, self.sc.pause_while_recording)
        self._own_client = client is None
        self.client = client or httpx.Client(timeout=timeouts(
            self.sc.connect_timeout, self.sc.read_timeout,
            min(self.sc.write_timeout, self.sc.stall_seconds)))
        rate = self.sc.bandwidth_kbps * 1000 / 8
        bucket = policy.TokenBucket(rate, max(rate / 4, 64 * 1024), clock=monotonic,
                                    sleep=sleep or time.sleep) if rate else None
        self.uploader = Uploader(self.client, self.state, base_url=self.sc.url, token=token,
                                 chunk_bytes=self.sc.chunk_bytes, bucket=bucket,
                                 should_stop=self._stop_flag.is_set, on_progress=on_progress,
                                 heartbeat=self._heartbeat, on_repair=self._repaired)
        self._found: queue.SimpleQueue[Found] = queue.SimpleQueue()
        self._status_written = (0.0, "")
        self.reachable = False
        self.decision = policy.Decision(False, "starting")
        self.summary = Summary()
        self._beat = 0.0
        self.foreign: dict[str, str] = {}
        """Segments in the spool that name another device (never uploaded: reported)."""
        from agent.fleetstatus import Reporter

        self.reporter = Reporter(self.client, self.sc.url, token, cfg.device.id, spool)
        """Status documents and selftest reports for the fleet dashboard (agent.fleetstatus)."""
        from agent.sync import discards

        self.discards = discards.Reporter(self.client, self.sc.url, token, cfg.device.id)
        """The wearer's discards, sent to the collector (agent.sync.discards)."""
        self._discards_due = False

    def _open_state(self, path: Path) -> State:
        """The state database, even on a disk with no free byte: release the ballast."""
        try:
            return State(path, clock=self.clock)
        except (sqlite3.Error, OSError) as exc:
            if not is_disk_full(exc) and disk_free(path.parent) >= LOW_FREE:
                raise SyncError(f"cannot open the sync state {path}: {exc}") from exc
            if not self.ballast.release():
                raise SyncError(f"disk full: cannot open the sync state {path} ({exc}), and "
                                f"no ballast is left to release") from exc
            self.ballast_released += 1
        try:
            return State(path, clock=self.clock)
        except (sqlite3.Error, OSError) as exc:
            raise SyncError(f"cannot open the sync state {path} even after releasing the "
                            f"ballast: {exc}") from exc

    def _default_probes(self) -> Probes:
        battery = Path(os.path.expanduser(self.sc.battery_file)) if self.sc.battery_file \
            else self.spool / "battery.json"

        def read_battery() -> bool | None:
            try:
                return policy.charging(battery.read_text())
            except OSError:
                return None

        return Probes(battery=read_battery,
                      recording=lambda: policy.recording(self.spool / "active"))

    # -- control

    def _repaired(self, seg_id: str, reason: str) -> None:
        self.summary.repairs += 1
        note = f"{seg_id}: repaired: {reason}"
        self.summary.errors = [*self.summary.errors[-9:], note]
        log.warning("%s: the server held other bytes than the file; discarding them and "
                    "uploading again (%s)", seg_id, reason)

    def _heartbeat(self) -> None:
        """systemd watchdog ping, at most once a second (the loop and every block sent)."""
        now = self.monotonic()
        if now - self._beat >= 1.0:
            self._beat = now
            sdnotify.notify("WATCHDOG=1")

    def stop(self) -> None:
        self._stop_flag.set()
        self._wake.set()

    def _sleep(self, seconds: float) -> None:
        if self._sleep_fn is not None:
            self._sleep_fn(max(0.0, seconds))
            return
        self._wake.wait(max(0.0, seconds))
        self._wake.clear()

    # -- discovery

    def _found_cb(self, f: Found) -> None:
        self._found.put(f)
        self._wake.set()

    def _discards(self) -> None:
        """The wearer's discard requests (agent.record.discard): whole segments become
        tombstones, ``discarded`` in the state (never uploaded), and the collector is asked
        to delete its copies (agent.sync.discards)."""
        from agent.record.discard import carry_out, pending

        if pending(self.spool):
            carry_out(self.spool, now_ns=time.monotonic_ns())
        self._discards_due = self.discards.mark(self.spool, self.state) > 0

    def _send_discards(self) -> None:
        """Ask the collector to delete what it holds of discarded segments (when it is
        reachable; an unconfirmed request is sent again after the next scan)."""
        if self._discards_due:
            self._discards_due = self.discards.send(self.spool, self.state) > 0
            self.summary.discarded = list(self.discards.confirmed)

    def rescan(self) -> int:
        self._discards()
        n = sum(self._add(f) for f in scan(self.sealed))
        for seg in self.state.in_states("missing"):
            if Path(seg.path).is_file():
                self.state.transition(seg.id, "sealed", last_error=None)
        return n

    def _add(self, f: Found) -> bool:
        if f.device != self.cfg.device.id:
            if f.id not in self.foreign:
                log.warning("%s: not this device's segment (device %s); skipped",
                            f.path, f.device)
            self.foreign[f.id] = f.device
            return False
        return self.state.add(f.id, f.seq, str(f.path), f.size)

    # -- situation

    def _observe(self) -> policy.Situation:
        r = self.rules
        return policy.Situation(
            collector_reachable=self.reachable,
            networks=self.probes.networks() if r.allowed_networks else (),
            charging=self.probes.battery() if r.only_while_charging else None,
            recording=self.probes.recording() if r.pause_while_recording else False)

    # -- the loop

    def run(self) -> Summary:
        retried = self.state.retry_rejected()
        if retried:
            log.info("retrying %d segment(s) rejected in an earlier run", retried)
        if self.once:
            self._retry_now()
        self.rescan()
        watcher = None
        if self.watch:
            watcher = Watcher(self.sealed, self._found_cb)
            watcher.start()
        sdnotify.notify("READY=1")
        caps: tus.Caps | None = None
        next_probe = next_rescan = 0.0
        tries: dict[str, int] = {}
        probes_failed = 0
        try:
            while not self._stop_flag.is_set():
                now = self.clock()
                self._heartbeat()
                while not self._found.empty():
                    self._add(self._found.get())
                if now >= next_rescan:
                    self.rescan()
                    next_rescan = now + self.sc.rescan_seconds
                self._retain(now)
                if caps is None and now >= next_probe:
                    caps = self.uploader.probe()
                    self.reachable = caps is not None
                    next_probe = now + self.sc.probe_seconds
                self.decision = policy.decide(self._observe(), self.rules)
                self.write_status()
                if self.reachable:
                    self.reporter.cycle(self.status)
                    self._send_discards()
                if not self.decision.upload:
                    if self.once and (self.reachable or probes_failed >= ONCE_PROBES):
                        self.summary.reason = self.decision.reason
                        break
                    if self.once:
                        probes_failed += 1
                        next_probe = now + backoff.delay(self.retry_policy, probes_failed,
                                                         self.rng)
                    self._sleep(min(self.sc.probe_seconds, max(0.1, next_probe - now)))
                    continue
                assert caps is not None
                due = [s for s in self.state.due(now)
                       if not self.once or tries.get(s.id, 0) < self.sc.once_attempts]
                if not due:
                    wait = self._idle_wait(now, tries)
                    if wait is None:
                        break
                    self._sleep(wait)
                    continue
                seg = due[0]
                try:
                    ev = self.uploader.upload(seg, caps, self.cfg.device.id)
                except Stopped:
                    break
                except (SyncError, OSError, sqlite3.Error) as exc:  # never crash the loop
                    log.exception("%s: unexpected failure", seg.id)
                    ev = tus.Retry(f"internal: {type(exc).__name__}: {exc}"[:300])
                tries[seg.id] = tries.get(seg.id, 0) + 1
                if self.once and isinstance(ev, tus.Retry) and ev.auth:
                    self.summary.reason = f"the collector refuses the token: {ev.reason}"
                    self._after(seg.id, ev, now)
                    break
                if self._after(seg.id, ev, now):
                    caps, self.reachable, next_probe = None, False, 0.0
        finally:
            if watcher:
                watcher.stop()
            self.summary.bytes_sent = self.uploader.bytes_sent
            self.summary.ballast_released = self.ballast_released
            self._finish()
        return self.summary

    def _retry_now(self) -> None:
        """--once is asked for now: a backoff saved by an earlier run is not waited out."""
        now = self.clock()
        waiting = [s for s in self.state.in_states(*PENDING) if s.next_attempt > now]
        for seg in waiting:
            self.state.update(seg.id, next_attempt=0.0)
        if waiting:
            log.warning("retrying %d segment(s) at once (an earlier run had backed off)",
                        len(waiting))

    def _idle_wait(self, now: float, tries: dict[str, int]) -> float | None:
        """Seconds to sleep with nothing due; None when --once has nothing more to try."""
        pending = self.state.in_states(*PENDING)
        if self.once:
            live = [s for s in pending if tries.get(s.id, 0) < self.sc.once_attempts
                    and not (s.state == "uploaded" and tries.get(s.id, 0))]
            if not live:
                return None
            return max(0.0, min(s.next_attempt for s in live) - now)
        if not pending:
            return self.sc.rescan_seconds
        return min(self.sc.rescan_seconds, max(0.0, min(s.next_attempt for s in pending) - now))

    def _after(self, seg_id: str, ev: tus.Event, now: float) -> bool:
        """Bookkeeping after an upload attempt; True if the collector should be re-probed."""
        seg = self.state.get(seg_id)
        assert seg is not None
        if isinstance(ev, tus.Verified):
            self.summary.verified.append(seg_id)
            self.state.update(seg_id, attempts=0, next_attempt=0.0)
            return False
        if isinstance(ev, tus.Rejected):
            log.error("%s rejected: %s", seg_id, ev.reason)
            return False
        attempts = seg.attempts + 1
        if isinstance(ev, tus.Unverifiable):
            delay = self.sc.backoff_cap
        else:
            auth = isinstance(ev, tus.Retry) and ev.auth
            # retrying an authentication failure sooner cannot fix a bad token: the cap
            delay = backoff.delay(self.retry_policy, attempts, self.rng,
                                  floor_s=self.sc.backoff_cap if auth else 0.0)
        reason = getattr(ev, "reason", type(ev).__name__)
        self.summary.retries += 1
        self.summary.errors = [*self.summary.errors[-9:], f"{seg_id}: {reason}"]
        log.warning("%s: %s (attempt %d, next in %.1fs)", seg_id, reason, attempts, delay)
        self.state.update(seg_id, attempts=attempts, last_error=reason,
                          next_attempt=now + delay)
        return isinstance(ev, tus.Retry) and (ev.status is None or ev.status >= 500)

    def _retain(self, now: float) -> None:
        rc = self.cfg.retention
        reserve = self.cfg.spool.reserve_mb * 1024 * 1024
        try:
            ids = retention.run(self.state, spool=self.spool,
                                keep_hours=rc.keep_verified_hours, reserve_bytes=reserve,
                                now=now)
        except (sqlite3.Error, OSError) as exc:
            if not is_disk_full(exc):
                raise
            ids = []
        self.summary.evicted.extend(ids)
        free = disk_free(self.spool)
        if free < LOW_FREE:
            # evicting found nothing more to free: our own ballast makes room for our state
            if self.ballast.release():
                self.ballast_released += 1
        elif free > 3 * self.ballast.size + reserve:
            self.ballast.ensure(reserve)

    def _finish(self) -> None:
        if self.once and not self.summary.reason and self._stop_flag.is_set():
            self.summary.reason = "stopped"
        self._retain(self.clock())
        for seg in self.state.in_states("sealed", "uploading", "uploaded", "rejected",
                                        "missing"):
            why = {"uploaded": "complete on the server but not verified",
                   "rejected": "rejected by the server", "missing": "file vanished"}.get(
                       seg.state, "not uploaded yet")
            self.summary.left.append({"id": seg.id, "state": seg.state, "why": why,
                                      "last_error": seg.last_error,
                                      "offset": seg.upload_offset, "size": seg.size})
        for seg_id, device in sorted(self.foreign.items()):
            self.summary.left.append({
                "id": seg_id, "state": "foreign", "last_error": None, "offset": 0, "size": 0,
                "why": f"a segment of device {device}, not of this device "
                       f"({self.cfg.device.id}): never uploaded with this config; move it "
                       "out of the spool, or sync it with that device's config"})
        if self.summary.left and not self.summary.reason:
            self.summary.reason = self.summary.left[0]["last_error"] or \
                self.summary.left[0]["why"]
        self.write_status(force=True)
        if self.reachable and self.once:
            self.reporter.cycle(self.status, force=True)
        if self._own_client:
            self.client.close()
        self.state.close()

    # -- status for `wearcap status` and the capture service

    def status(self) -> dict[str, Any]:
        c = self.state.counts()
        backlog = [c[s] for s in ("sealed", "uploading", "uploaded", "rejected")]
        try:
            free = shutil.disk_usage(self.spool).free
        except OSError:
            free = 0
        errors = [s for s in self.state.in_states(*PENDING, "rejected", "missing")
                  if s.last_error]
        reserve = self.cfg.spool.reserve_mb * 1024 * 1024
        return {
            "backlog_segments": sum(n for n, _ in backlog),
            "backlog_bytes": sum(b for _, b in backlog),
            "verified_segments": c["verified"][0] + c["evicted"][0],
            "evictable_bytes": c["verified"][1],
            "rejected_segments": c["rejected"][0],
            "unverified_segments": c["uploaded"][0],
            "missing_segments": c["missing"][0],
            "discarded_segments": c["discarded"][0],
            "last_error": errors[-1].last_error if errors else None,
            "collector_reachable": self.reachable,
            "uploading": self.decision.upload,
            "reason": self.decision.reason,
            "disk_free_bytes": free,
            "reserve_bytes": reserve,
            "disk_full_of_backlog": free < reserve and c["verified"][0] == 0,
            "updated": self.clock(),
        }

    def write_status(self, force: bool = False) -> None:
        data = self.status()
        key = json.dumps({k: v for k, v in data.items()
                          if k not in ("updated", "disk_free_bytes")}, sort_keys=True)
        last_t, last_key = self._status_written
        if not force and key == last_key and self.monotonic() - last_t < STATUS_EVERY:
            return
        if key != last_key:  # systemd's view: uploading, or idle and why
            sdnotify.notify(f"STATUS={'uploading' if data['uploading'] else 'idle'} "
                            f"({data['reason']}); backlog {data['backlog_segments']} "
                            f"segment(s)")
        path = self.spool / STATUS_FILE
        try:
            self.spool.mkdir(parents=True, exist_ok=True)
            durable.write_atomic(path, json.dumps(data, indent=1).encode())
        except OSError as exc:
            log.warning("cannot write %s: %s", path, exc)
            return
        self._status_written = (self.monotonic(), key)
