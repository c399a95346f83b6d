"""The spool contract: paths, fsync/rename order, immutability, sequences that never repeat,
and the disk policy (stop with a fault, never delete)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import stat
import subprocess
import uuid
from pathlib import Path

import pytest

from agent.errors import DiskFullError, SpoolError
from agent.record.segment import SegmentHeader, SegmentWriter
from agent.record.spool import FsOps, Spool, parse_name
from tests.h264_frames import encode_frames


class RecordingOps(FsOps):
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def fsync(self, fd: int) -> None:
        self.calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        super().fsync(fd)

    def rename(self, src: Path, dst: Path) -> None:
        self.calls.append(("rename", f"{src} -> {dst}"))
        super().rename(src, dst)

    def chmod(self, path: Path, mode: int) -> None:
        self.calls.append(("chmod", f"{path} {mode:o}"))
        super().chmod(path, mode)

    def fsync_dir(self, path: Path) -> None:
        self.calls.append(("fsync_dir", str(path)))
        super().fsync_dir(path)


def write_one(spool: Spool, n: int = 5):
    seq = spool.next_seq()
    prev_seq, prev_sha = spool.chain()
    fh = spool.open_part(seq)
    w = SegmentWriter(fh, SegmentHeader(spool.device_id, seq, prev_seq, prev_sha, "d", None))
    for f in encode_frames(n):
        w.write_frame(f)
    sha, size = w.close()
    return spool.seal(seq, fh, sha, size)


def test_layout_and_seal_order(tmp_path):
    ops = RecordingOps()
    spool = Spool(tmp_path / "sp", "dev-1", ops=ops)
    seq = spool.next_seq()
    assert seq == 0
    fh = spool.open_part(seq)
    part = tmp_path / "sp/active/dev-1-00000000.mcap.part"
    assert part.exists()
    w = SegmentWriter(fh, SegmentHeader("dev-1", seq, -1, "", "d", None))
    for f in encode_frames(3):
        w.write_frame(f)
    sha, size = w.close()
    ops.calls.clear()
    sealed = spool.seal(seq, fh, sha, size)
    dst = tmp_path / "sp/sealed/dev-1-00000000.mcap"
    assert sealed.path == dst and not part.exists()
    names = [c[0] for c in ops.calls]
    # fsync(file) -> chmod -> rename -> fsync(sealed/) -> fsync(active/) -> state (atomic)
    assert names[:5] == ["fsync", "chmod", "rename", "fsync_dir", "fsync_dir"]
    assert ops.calls[0][1] == str(part)
    assert ops.calls[3][1] == str(tmp_path / "sp/sealed")
    assert ops.calls[4][1] == str(tmp_path / "sp/active")
    assert names[5:] == ["fsync", "rename", "fsync_dir"]  # the state file: tmp, fsync, rename
    # Sealed: immutable and hashed right.
    assert stat.S_IMODE(dst.stat().st_mode) == 0o444
    assert hashlib.sha256(dst.read_bytes()).hexdigest() == sha and dst.stat().st_size == size


def test_sequences_never_repeat_and_the_chain_links(tmp_path):
    root = tmp_path / "sp"
    a = write_one(Spool(root, "dev-1"))
    b = write_one(Spool(root, "dev-1"))  # a restart
    assert (a.seq, b.seq) == (0, 1)
    # The sync service uploads and deletes both; the state file still remembers.
    for p in (a.path, b.path):
        p.chmod(0o644)
        p.unlink()
    c = write_one(Spool(root, "dev-1"))
    assert c.seq == 2
    from mcap.reader import make_reader
    with c.path.open("rb") as fh:
        md = {m.name: m.metadata for m in make_reader(fh).iter_metadata()}["wearcap.segment"]
    assert (md["previous_sequence"], md["previous_sha256"]) == ("1", b.sha256)
    # State file lost (or damaged): the ids on disk still move the sequence on.
    (root / "capture-state.json").write_text("{torn")
    d = write_one(Spool(root, "dev-1"))
    assert d.seq == 3
    # Both gone: a leftover part file is enough to never reuse its number.
    (root / "capture-state.json").unlink()
    (root / "active" / "dev-1-00000009.mcap.part").write_bytes(b"")
    assert Spool(root, "dev-1").next_seq() == 10


def test_sealed_then_crash_before_state_is_still_chained(tmp_path):
    root = tmp_path / "sp"
    a = write_one(Spool(root, "dev-1"))
    (root / "capture-state.json").unlink()
    seq, sha = Spool(root, "dev-1").chain()
    assert (seq, sha) == (a.seq, a.sha256)


def test_parse_name():
    assert parse_name("my-dev-1-00000042.mcap") == ("my-dev-1", 42)
    assert parse_name("my-dev-1-00000042.mcap.part") == ("my-dev-1", 42)
    assert parse_name("x.mcap") is None


def test_one_capture_service_per_spool(tmp_path):
    a, b = Spool(tmp_path, "d"), Spool(tmp_path, "d")
    a.lock()
    with pytest.raises(SpoolError, match="another capture service"):
        b.lock()
    a.unlock()
    b.lock()
    b.unlock()


def test_reserve_larger_than_free_space_stops_and_deletes_nothing(tmp_path):
    spool = Spool(tmp_path, "d")
    write_one(spool)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    free_mb = shutil.disk_usage(tmp_path).free // 2**20
    full = Spool(tmp_path, "d", reserve_mb=free_mb + 1024)
    with pytest.raises(DiskFullError, match="disk full"):
        full.check_space()
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    budget = Spool(tmp_path, "d", max_gb=1e-6)  # ~1 KB budget, already used
    with pytest.raises(DiskFullError, match="budget"):
        budget.check_space()


@pytest.fixture
def tiny_fs(tmp_path):
    """A 4 MB tmpfs (root only): a really full disk."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs")
    mnt = tmp_path / f"fs-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                       capture_output=True, check=False)
    if r.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_enospc_mid_segment_is_a_clear_spool_error(tiny_fs):
    spool = Spool(tiny_fs, "d")
    seq = spool.next_seq()
    fh = spool.open_part(seq)
    w = SegmentWriter(fh, SegmentHeader("d", seq, -1, "", "x", None), chunk_bytes=64 * 1024)
    frame = encode_frames(1)[0]
    big = dataclasses.replace(frame, data=frame.data + os.urandom(256 * 1024))
    with pytest.raises(DiskFullError, match="No space left"):
        for _ in range(100):
            w.write_frame(big)
            w.checkpoint()
    assert spool.part_path(seq).exists()  # nothing deleted
