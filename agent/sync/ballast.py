"""The sync service's ballast: a few MiB of disk it holds so that it can start on a full disk.

The service that frees space (by evicting verified segments) needs space itself: SQLite's WAL
and shared-memory files, a status file. When the capture side has filled the disk to the last
byte and nothing is verified yet, there is nothing to evict; so the service keeps a file of
its own, allocated while space was plentiful, and releases it to make room for its state.
It takes the ballast back once there is room again.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import sqlite3
from pathlib import Path

from agent.durable import fsync_dir

log = logging.getLogger(__name__)

BALLAST_NAME = "sync-ballast"
BALLAST_BYTES = 8 * 1024 * 1024
LOW_FREE = 1024 * 1024
"""Below this much free space the service releases its ballast (if nothing else can go)."""


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if isinstance(exc, sqlite3.Error):
        text = str(exc).lower()
        return "full" in text or "disk i/o" in text
    return False


def disk_free(path: Path) -> int:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return 0


class Ballast:
    def __init__(self, path: Path, size: int = BALLAST_BYTES) -> None:
        self.path = path
        self.size = size

    def present(self) -> bool:
        try:
            return self.path.stat().st_size >= self.size
        except OSError:
            return False

    def ensure(self, reserve_bytes: int = 0) -> bool:
        """Hold the ballast if the disk can spare it (twice its size above the reserve)."""
        if self.present():
            return True
        if disk_free(self.path.parent) < 3 * self.size + reserve_bytes:
            return False
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
            try:
                try:
                    os.posix_fallocate(fd, 0, self.size)  # real blocks, not a sparse file
                except OSError as exc:
                    if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                        raise
                    block = b"\0" * 65536
                    for _ in range(self.size // len(block)):
                        os.write(fd, block)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            fsync_dir(self.path.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            log.debug("no ballast: %s", exc)
            return False
        log.info("holding %d MiB of ballast at %s for a full disk", self.size >> 20, self.path)
        return True

    def release(self) -> bool:
        """Free the ballast; True if there was one."""
        freed = False
        for p in (self.path, self.path.with_name(self.path.name + ".tmp")):
            try:
                p.unlink()
                freed = True
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("cannot release ballast %s: %s", p, exc)
        if freed:
            with contextlib.suppress(OSError):
                fsync_dir(self.path.parent)
            log.warning("disk full: released the sync ballast (%d MiB) to make room for the "
                        "sync state", self.size >> 20)
        return freed
