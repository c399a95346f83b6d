"""Exports on request: a device's take as Foxglove MCAP or MP4, for admin and reader tokens.

    GET /data/devices/{id}/takes                  the device's takes (agent.export.takes)
    GET /data/devices/{id}/takes/{take}.mcap      Foxglove MCAP of that take
    GET /data/devices/{id}/takes/{take}.mp4       its H.264 remuxed into MP4 (no re-encode)

The take is found among the device's verified segments with the same code as ``wearcap
export`` (one boot, an unbroken run of sequence numbers, no pause/discard inside). An export
is written once into the object backend under ``_exports/<device>/<take>.<ext>`` (device ids
start with a letter or digit, so the prefix cannot collide with a device's objects), recorded
in the store with its take's seq range, and served from there afterwards, by every node.

Purged with its source: :func:`purge_derived` is a discard/retention hook (``discard.py``)
that deletes every cached export whose range contains the purged seq. An export being built
while a source segment is discarded is checked against the tombstones after it is stored,
and dropped if one appeared in its range, so a discarded segment never survives in an export.

The writers need the ``export`` extra (pyarrow, protobuf, mcap-protobuf-support, PyAV); a
collector without it answers 501 with the install command.
"""

from __future__ import annotations

import importlib
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.collector.store import Export
from agent.collector.tus import TusError
from agent.contract import SEALED_SUFFIX

if TYPE_CHECKING:
    from agent.collector.service import Collector
    from agent.export.takes import Take

log = logging.getLogger("agent.collector")

FORMATS = {"mcap": ("foxglove", ["google.protobuf", "mcap_protobuf",
                                 "foxglove_schemas_protobuf", "mcap"]),
           "mp4": ("mp4", ["av", "pyarrow"])}
"""URL suffix -> (export target, modules it needs)."""
MEDIA = {"mcap": "application/x-mcap", "mp4": "video/mp4"}
PREFIX = "_exports"


def need_extra(fmt: str) -> None:
    """501 unless the export extra is installed for ``fmt``."""
    for module in FORMATS[fmt][1]:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise TusError(501, f"this collector cannot export {fmt}: {module} is not "
                                f"installed (pip install 'wearcap[export]' where the collector "
                                f"runs)") from exc


class Workdir:
    """The device's verified segments as files in ``sealed/`` (links to the local backend,
    or copies from S3), with its tombstones beside them, so ``agent.export.takes`` reads
    them like a spool and names a discard as one."""

    def __init__(self, c: Collector, device: str) -> None:
        self.c = c
        self.device = device
        scratch = c.data / "export-scratch"
        scratch.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix=f"{device}-", dir=scratch))

    def __enter__(self) -> Workdir:
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def takes(self) -> list[Take]:
        from agent.export import takes as tk

        sealed = self.root / "sealed"
        sealed.mkdir()
        tombs = self.root / "tombstones"
        tombs.mkdir()
        for t in self.c.store.tombstones(self.device):
            (tombs / f"{t.segment_id}.json").write_text(json.dumps(
                {"id": t.segment_id, "sequence": t.seq, "sha256": t.sha256,
                 "reason": t.reason}))
        paths = []
        for up in self.c.store.device_uploads(self.device):
            if up.state != "verified":
                continue
            dest = sealed / f"{up.segment_id}{SEALED_SUFFIX}"
            if up.backend == "local":
                dest.symlink_to(self.c.local.root / up.object_key)
            else:
                with open(dest, "wb") as f:
                    for block in self.c.read(up):
                        f.write(block)
            paths.append(dest)
        from agent.errors import InputError

        try:
            return tk.takes(tk.load(paths)) if paths else []
        except InputError as exc:
            raise TusError(422, f"cannot read {self.device}'s segments as recordings: "
                                f"{exc}") from exc


def take_entry(t: Take) -> dict[str, Any]:
    base = f"/data/devices/{t.device_id}/takes/{t.name}"
    return {"take": t.name, "boot_id": t.boot_id, "first_seq": t.first_seq,
            "last_seq": t.last_seq, "segments": [s.id for s in t.segments], "ends": t.ends,
            "mcap": base + ".mcap", "mp4": base + ".mp4"}


def list_takes(c: Collector, device: str) -> list[dict[str, Any]]:
    need_extra("mcap")  # reading segments needs the mcap reader of the extra
    with Workdir(c, device) as w:
        return [take_entry(t) for t in w.takes()]


def get_export(c: Collector, device: str, take: str, fmt: str) -> Export:
    """The cached export, made now if there is none."""
    need_extra(fmt)
    cached = c.store.export(device, take, fmt)
    if cached is not None:
        return cached
    with Workdir(c, device) as w:
        found = [t for t in w.takes() if t.name == take]
        if not found:
            raise TusError(404, f"no take {take!r} of {device} among its verified segments "
                                f"(GET /data/devices/{device}/takes lists them)")
        t = found[0]
        out = w.root / f"out.{fmt}"
        if fmt == "mcap":
            from agent.export import foxglove

            foxglove.export([t], out)
        else:
            from agent.export import mp4  # type: ignore[attr-defined,unused-ignore]

            files = mp4.export_take(t, w.root / "mp4")
            video = [f for f in files if f.name == "video.mp4"]
            if not video:
                raise TusError(404, f"take {take} has no decodable video")
            video[0].replace(out)
        size = out.stat().st_size
        key = c.backend.put_file(f"{PREFIX}/{device}/{take}.{fmt}", out)
        e = Export(device, take, fmt, t.first_seq, t.last_seq, c.backend.name, key, size,
                   c.clock())
    c.store.put_export(e)
    # a source discarded while this was built: the export must not outlive it
    if any(c.store.tombstone(device, q) for q in (s.sequence for s in t.segments)
           if q is not None):
        drop(c, e)
        raise TusError(410, f"a segment of take {take} was discarded while it was exported")
    log.info("exported %s as %s (%d bytes)", take, fmt, e.length)
    return e


def _backend(c: Collector, e: Export) -> Any:
    return c.local if e.backend == "local" else c.backend


def read_export(c: Collector, e: Export) -> Any:
    return _backend(c, e).read(e.object_key)


def drop(c: Collector, e: Export) -> None:
    """Delete a cached export (its object, then its row)."""
    _backend(c, e).delete(e.object_key)
    c.store.delete_export(e.device, e.take, e.format)


def purge_derived(c: Collector, device: str, seq: int) -> list[str]:
    """Discard/retention hook: delete every cached export whose take contains ``seq``."""
    gone = []
    for e in c.store.exports_covering(device, seq):
        drop(c, e)
        gone.append(f"export:{e.take}.{e.format}")
    return gone
