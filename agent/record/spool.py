"""The spool directory (a contract shared with the sync service):

    <spool>/active/<id>.mcap.part     being written (capture service only)
    <spool>/sealed/<id>.mcap          closed: fsync(file), chmod 0444, rename, fsync(dirs)
    <spool>/quarantine/<name>         what recovery could not use (+ <name>.why)
    <spool>/capture-state.json        last sequence handed out and the last sealed SHA-256
    <spool>/capture.lock              flock: one capture service per spool

Segment ids are ``<device_id>-<seq:08d>``. A sequence number is never handed out twice: the
next one is above both the durable state file and every id found on disk, and is made durable
before its file is created.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from agent import durable
from agent.contract import PART_SUFFIX, SEALED_SUFFIX, parse_segment_file, segment_id
from agent.digest import sha256_file
from agent.errors import DiskFullError, SpoolError

log = logging.getLogger(__name__)

STATE_FILE = "capture-state.json"


def parse_name(name: str) -> tuple[str, int] | None:
    """(device_id, seq) of a spool file name (``.mcap`` or ``.mcap.part``), or None."""
    return parse_segment_file(name)


class FsOps:
    """The durable file operations the spool uses, in one place (tests record their order)."""

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def rename(self, src: Path, dst: Path) -> None:
        os.rename(src, dst)

    def chmod(self, path: Path, mode: int) -> None:
        os.chmod(path, mode)

    def fsync_dir(self, path: Path) -> None:
        durable.fsync_dir(path)


@dataclass(frozen=True, slots=True)
class SealedSegment:
    id: str
    seq: int
    path: Path
    sha256: str
    size: int


class Spool:
    def __init__(self, root: Path, device_id: str, *, reserve_mb: int = 0, max_gb: float = 0.0,
                 ops: FsOps | None = None) -> None:
        self.root = Path(root)
        self.device_id = device_id
        self.reserve_bytes = reserve_mb * 1024 * 1024
        self.max_bytes = int(max_gb * 1024**3)
        self.ops = ops or FsOps()
        self.active = self.root / "active"
        self.sealed = self.root / "sealed"
        self.quarantined = self.root / "quarantine"
        self._lock_fd: int | None = None
        try:
            for d in (self.root, self.active, self.sealed, self.quarantined):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolError(f"cannot create the spool: {exc.strerror}", path=str(root)) from exc

    # ------------------------------------------------------------ lock
    def lock(self) -> None:
        """Take the spool for this process; a second capture service gets a SpoolError."""
        fd = os.open(self.root / "capture.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolError("another capture service is using this spool",
                             path=str(self.root)) from None
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ------------------------------------------------------------ state
    def _state_path(self) -> Path:
        return self.root / STATE_FILE

    def read_state(self) -> dict[str, Any]:
        try:
            d = json.loads(self._state_path().read_text())
            return d if isinstance(d, dict) else {}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            # A torn state file cannot happen (atomic replace); treat damage as "unknown" and
            # rely on the ids on disk, which only ever grow.
            log.warning("spool state %s unreadable (%s); using the ids on disk",
                        self._state_path(), exc)
            return {}

    def _write_state(self, **changes: Any) -> None:
        state = {**self.read_state(), **changes}
        path = self._state_path()
        tmp = path.with_suffix(".tmp")
        with tmp.open("w") as fh:
            json.dump(state, fh, sort_keys=True)
            fh.flush()
            self.ops.fsync(fh.fileno())
        self.ops.rename(tmp, path)
        self.ops.fsync_dir(self.root)

    def ids_on_disk(self) -> Iterator[tuple[int, Path]]:
        for d in (self.active, self.sealed, self.quarantined):
            for p in d.iterdir():
                parsed = parse_name(p.name)
                if parsed and parsed[0] == self.device_id:
                    yield parsed[1], p

    def last_seq(self) -> int:
        on_disk = max((s for s, _ in self.ids_on_disk()), default=-1)
        return max(int(self.read_state().get("last_seq", -1)), on_disk)

    def next_seq(self) -> int:
        seq = self.last_seq() + 1
        self._write_state(last_seq=seq)
        return seq

    def raise_floor(self, next_seq: int) -> int:
        """Make the next segment's seq at least ``next_seq`` (the sequence floor learned from
        the collector at provisioning: a fresh SD card must not restart at 0). Never lowers."""
        last = max(self.last_seq(), next_seq - 1)
        self._write_state(last_seq=last)
        return last + 1

    def chain(self) -> tuple[int, str]:
        """(seq, sha256) of the newest sealed segment: what the next segment points back to."""
        st = self.read_state()
        seq, sha = int(st.get("last_sealed_seq", -1)), str(st.get("last_sealed_sha256", ""))
        newest = max(((s, p) for s, p in self.ids_on_disk() if p.parent == self.sealed),
                     default=None)
        if newest is not None and newest[0] > seq:  # sealed, then crashed before the state
            seq, sha = newest[0], sha256_file(newest[1])
        return seq, sha

    # ------------------------------------------------------------ files
    def part_path(self, seq: int) -> Path:
        return self.active / (segment_id(self.device_id, seq) + PART_SUFFIX)

    def sealed_path(self, seq: int) -> Path:
        return self.sealed / (segment_id(self.device_id, seq) + SEALED_SUFFIX)

    def open_part(self, seq: int) -> IO[bytes]:
        path = self.part_path(seq)
        try:
            fh = path.open("xb")
            self.ops.fsync_dir(self.active)
        except OSError as exc:
            raise SpoolError(f"cannot create segment: {exc.strerror}", path=str(path)) from exc
        return fh

    def parts(self) -> list[Path]:
        found = [(parse_name(p.name), p) for p in self.active.glob("*" + PART_SUFFIX)]
        return [p for n, p in sorted((n, p) for n, p in found if n)]

    def seal(self, seq: int, fh: IO[bytes], sha256: str, size: int,
             part: Path | None = None) -> SealedSegment:
        """flush, fsync(file), chmod 0444, rename into sealed/, fsync(sealed/, active/)."""
        src = part or self.part_path(seq)
        dst = self.sealed_path(seq)
        try:
            fh.flush()
            self.ops.fsync(fh.fileno())
            fh.close()
            self.ops.chmod(src, 0o444)
            if dst.exists():
                raise SpoolError("a sealed segment with this id exists", path=str(dst))
            self.ops.rename(src, dst)
            self.ops.fsync_dir(self.sealed)
            self.ops.fsync_dir(src.parent)
        except OSError as exc:
            raise SpoolError(f"cannot seal: {exc.strerror}", path=str(src)) from exc
        st = self.read_state()
        if seq >= int(st.get("last_sealed_seq", -1)):
            self._write_state(last_sealed_seq=seq, last_sealed_sha256=sha256,
                              last_seq=max(seq, int(st.get("last_seq", -1))))
        return SealedSegment(segment_id(self.device_id, seq), seq, dst, sha256, size)

    def quarantine(self, path: Path, why: str) -> Path:
        """Move ``path`` aside (never delete) and say why next to it."""
        dst = self.quarantined / path.name
        n = 1
        while dst.exists():
            dst = self.quarantined / f"{path.name}.{n}"
            n += 1
        self.ops.rename(path, dst)
        with contextlib.suppress(OSError):
            dst.with_name(dst.name + ".why").write_text(why + "\n")
        self.ops.fsync_dir(self.quarantined)
        self.ops.fsync_dir(path.parent)
        log.warning("quarantined %s -> %s: %s", path, dst, why)
        return dst

    # ------------------------------------------------------------ disk policy
    def usage_bytes(self) -> int:
        total = 0
        for d in (self.active, self.sealed):
            for p in d.iterdir():
                with contextlib.suppress(OSError):
                    total += p.stat().st_size
        return total

    def check_space(self, margin_bytes: int = 0) -> None:
        """Raise DiskFullError when the free space (less ``margin_bytes`` still to come) is
        under the reserve, or the spool is over its budget. Never deletes anything."""
        try:
            st = os.statvfs(self.root)
        except OSError as exc:
            raise SpoolError(f"cannot stat the spool: {exc.strerror}", path=str(self.root)) \
                from exc
        free = st.f_bavail * st.f_frsize
        if free - margin_bytes < self.reserve_bytes:
            raise DiskFullError(
                f"disk full: {free // 2**20} MB free, reserve is {self.reserve_bytes // 2**20} "
                "MB; recording stopped (nothing was deleted; uploads free space)",
                path=str(self.root))
        if self.max_bytes:
            used = self.usage_bytes()
            if used + margin_bytes > self.max_bytes:
                raise DiskFullError(
                    f"spool budget used: {used / 2**30:.2f} GB of "
                    f"{self.max_bytes / 2**30:.2f} GB; recording stopped (nothing was deleted)",
                    path=str(self.root))
