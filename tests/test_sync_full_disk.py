"""Sync on a disk with no free byte at all (a real, small tmpfs filled to the last block):
it starts, uploads and frees space; before, `PRAGMA journal_mode=WAL` failed and the one
service that could free space crash-looped."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_cli
from sync_servers import DEVICE, make_segments, sha256_file, write_config
from test_collector_support import ServerThread

from agent.sync.ballast import BALLAST_NAME


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "fs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m,mode=0755", "tmpfs", str(mnt)],
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        why = f"cannot mount a tmpfs here ({r.stderr.strip()}); needs root"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path: Path) -> None:
    """Write until the filesystem refuses another byte."""
    with open(path / "filler", "wb", buffering=0) as f:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            block = b"\xaa" * size
            while True:
                try:
                    f.write(block)
                except OSError:
                    break


def test_sync_starts_and_uploads_on_a_full_disk_with_nothing_verified(tmp_path: Path,
                                                                       tiny_fs: Path) -> None:
    spool = tiny_fs / "spool"
    paths = make_segments(spool, DEVICE, 3, 1_000_000)
    want = {p.stem: sha256_file(p) for p in paths}
    srv = ServerThread(tmp_path / "collector").start()
    try:
        token = srv.enroll(DEVICE)
        (tmp_path / "token").write_text(token)
        # an earlier run while the collector was away: state created, nothing verified
        cfg_away = write_config(tmp_path / "away.toml", url="http://127.0.0.1:9/files/",
                                spool=spool, token_file=tmp_path / "token",
                                backoff_base=0.01, backoff_cap=0.05, probe_seconds=0.1)
        r = run_cli("sync", "--config", str(cfg_away), "--once", "--json")
        assert r.returncode != 0
        assert (spool / BALLAST_NAME).is_file(), "no ballast was laid while space was free"
        # capture fills the disk to the last byte
        fill(tiny_fs)
        assert os.statvfs(tiny_fs).f_bavail == 0
        cfg = write_config(tmp_path / "agent.toml", url=f"{srv.url}/files/", spool=spool,
                           token_file=tmp_path / "token", backoff_base=0.01, backoff_cap=0.1)
        r = run_cli("sync", "--config", str(cfg), "--once", "--json")
        assert r.returncode == 0, r.stderr[-3000:]
        summary = json.loads(r.stdout)
        assert sorted(summary["verified"]) == sorted(want)
        assert summary["ballast_released"] >= 1
        assert "released the sync ballast" in r.stderr
        from sync_servers import collector_objects

        assert collector_objects(srv.data) == want
        assert not any(p.exists() for p in paths)  # verified, then evicted for space
    finally:
        srv.stop()
