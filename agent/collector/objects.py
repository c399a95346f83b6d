"""The collector's bytes: local staging of unfinished uploads, and where verified segments go.

    <data>/staging/<upload_id>.part   bytes of an unfinished upload (offset = committed length)
    <data>/objects/<device>/<device>-<seq:08d>.mcap   verified segments (local backend)

Every path is built from an upload id the server drew at random, or from a device id checked
at enrollment plus an integer sequence number; never from raw metadata text. The metadata
(offsets, states) lives behind :class:`agent.collector.store.Store`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from agent.collector.store import Upload
from agent.digest import sha256_file
from agent.durable import fsync_dir
from agent.errors import CollectorError

CHUNK = 1024 * 1024


class Staging:
    """Local files of unfinished uploads, named by upload id only."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, upload_id: str) -> Path:
        return self.root / f"{upload_id}.part"

    def create(self, upload_id: str) -> None:
        fd = os.open(self.path(upload_id), os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o640)
        os.close(fd)
        fsync_dir(self.root)

    def size(self, upload_id: str) -> int:
        try:
            return self.path(upload_id).stat().st_size
        except FileNotFoundError:
            return 0

    def truncate(self, upload_id: str, size: int) -> None:
        p = self.path(upload_id)
        if not p.exists():
            p.touch()
        with open(p, "r+b") as f:
            f.truncate(size)
            os.fsync(f.fileno())

    def remove(self, upload_id: str) -> None:
        self.path(upload_id).unlink(missing_ok=True)

    def sha256(self, upload_id: str) -> str:
        return sha256_file(self.path(upload_id))


class Backend(Protocol):
    """Where verified segments end up. Staging is always local; backends take it from there."""

    name: str

    def store(self, upload: Upload, staged: Path) -> str:
        """Move the verified staged file into the backend; returns its key."""
        ...

    def put_file(self, key: str, path: Path) -> str:
        """Store a file the collector made (an export) under ``key``; ``path`` is consumed.
        Returns the key to read and delete it by (a prefix may be added)."""
        ...

    def read(self, key: str) -> Iterator[bytes]: ...

    def delete(self, key: str) -> None: ...

    def describe(self) -> str: ...


class LocalBackend:
    """Verified segments as files under ``<data>/objects``."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        p = (self.root / key).resolve()
        if self.root.resolve() not in p.parents:
            raise CollectorError(f"object key {key!r} escapes the data directory")
        return p

    def store(self, upload: Upload, staged: Path) -> str:
        key = upload.object_name()
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, dest)  # staged was fsynced when its last byte was acknowledged
        fsync_dir(dest.parent)
        fsync_dir(staged.parent)
        return key

    def put_file(self, key: str, path: Path) -> str:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(path, dest)
        fsync_dir(dest.parent)
        return key

    def read(self, key: str) -> Iterator[bytes]:
        with open(self._path(key), "rb") as f:
            while block := f.read(CHUNK):
                yield block

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def describe(self) -> str:
        return f"local directory {self.root}"
