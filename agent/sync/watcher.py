"""Discovery of sealed segments: the ``watchdog`` package on ``<spool>/sealed/``, plus a
periodic rescan because inotify can miss events (queue overflow, a directory re-created).

Only ``sealed/<device_id>-<seq:08d>.mcap`` counts. ``active/*.mcap.part`` are still being
written and are never looked at; anything else in ``sealed/`` is ignored.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.contract import SEALED_SUFFIX, parse_segment_file

log = logging.getLogger(__name__)



@dataclass(frozen=True, slots=True)
class Found:
    id: str
    device: str
    seq: int
    path: Path
    size: int


def parse(path: Path) -> Found | None:
    """The segment a sealed file holds, or None if the name is not a segment's."""
    parsed = parse_segment_file(path.name, sealed_only=True)
    if parsed is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    if not path.is_file():
        return None
    device, seq = parsed
    return Found(path.name[:-len(SEALED_SUFFIX)], device, seq, path, st.st_size)


def scan(sealed: Path) -> list[Found]:
    """Every sealed segment in ``sealed``, lowest sequence number first."""
    try:
        entries = list(sealed.iterdir())
    except FileNotFoundError:
        return []
    found = [f for f in map(parse, entries) if f is not None]
    return sorted(found, key=lambda f: (f.seq, f.id))


class Watcher:
    """Calls ``on_found(Found)`` from a watchdog thread when a segment appears in ``sealed``."""

    def __init__(self, sealed: Path, on_found: Callable[[Found], None]) -> None:
        self.sealed = sealed
        self.on_found = on_found
        self._observer: Any = None
        self._lock = threading.Lock()

    def start(self) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        watcher = self

        class Handler(FileSystemEventHandler):
            def on_created(self, event: Any) -> None:
                watcher._seen(event.src_path)

            def on_moved(self, event: Any) -> None:
                watcher._seen(event.dest_path)

            def on_closed(self, event: Any) -> None:
                watcher._seen(event.src_path)

        self.sealed.mkdir(parents=True, exist_ok=True)
        self._observer = Observer()
        self._observer.schedule(Handler(), str(self.sealed), recursive=False)
        self._observer.daemon = True
        self._observer.start()

    def _seen(self, path: str | bytes) -> None:
        p = Path(path.decode() if isinstance(path, bytes) else path)
        if p.parent != self.sealed:
            return
        found = parse(p)
        if found is not None:
            with self._lock:
                self.on_found(found)

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
