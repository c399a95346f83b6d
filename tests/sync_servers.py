"""Real servers and spools for the sync tests, harness and benchmarks (all on 127.0.0.1).

    with tus_node_server(tmp) as srv: ...     # @tus/server (third party), srv.url, srv.files
    with collector(tmp) as col: ...           # `wearcap collector` child, col.url, col.token
    make_segments(spool, "sim-0001", n, size) # sealed files (any bytes; names per the contract)
    write_config(path, url=..., spool=..., token_file=..., **sync_fields)
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
INTEROP = REPO / "tests" / "interop"
DEVICE = "sim-0001"


@dataclass
class Server:
    proc: subprocess.Popen[str]
    port: int
    root: Path
    token: str = ""
    lines: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/files/"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _start(cmd: list[str], pattern: str, root: Path, cwd: Path | None = None,
           timeout: float = 30.0, preexec_fn: Any = None) -> Server:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=cwd, start_new_session=True, preexec_fn=preexec_fn)
    lines: list[str] = []
    found: list[int] = []
    done = threading.Event()

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            m = re.search(pattern, line)
            if m and not found:
                found.append(int(m.group(1)))
                done.set()
        done.set()

    threading.Thread(target=reader, daemon=True).start()
    done.wait(timeout)
    if not found:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"server did not start: {cmd}\n{''.join(lines)}")
    return Server(proc, found[0], root, lines=lines)


def node_available() -> bool:
    return shutil.which("node") is not None and (INTEROP / "node_modules" / "@tus").is_dir()


@contextlib.contextmanager
def tus_node_server(root: Path, port: int = 0) -> Iterator[Server]:
    files = root / "tus-files"
    files.mkdir(parents=True, exist_ok=True)
    srv = _start(["node", "server.js", str(port), str(files)], r"listening (\d+)", files,
                 cwd=INTEROP)
    try:
        yield srv
    finally:
        srv.stop()


def start_collector(data: Path, port: int = 0) -> Server:
    return _start([sys.executable, "-m", "agent", "collector", "--data", str(data),
                   "--listen", f"127.0.0.1:{port}"], r"listening on http://127\.0\.0\.1:(\d+)",
                  data, cwd=REPO)


def enroll(data: Path, device: str = DEVICE) -> str:
    out = subprocess.run([sys.executable, "-m", "agent", "collector", "enroll", device,
                          "--data", str(data)], capture_output=True, text=True, check=True,
                         cwd=REPO)
    return out.stdout.strip()


@contextlib.contextmanager
def collector(root: Path, device: str = DEVICE) -> Iterator[Server]:
    data = root / "collector"
    data.mkdir(parents=True, exist_ok=True)
    token = enroll(data, device)
    srv = start_collector(data)
    srv.token = token
    try:
        yield srv
    finally:
        srv.stop()


def collector_objects(data: Path, device: str = DEVICE) -> dict[str, str]:
    """{segment id: sha256} of every stored object on the collector's local backend."""
    d = data / "objects" / device
    if not d.is_dir():
        return {}
    return {p.stem: sha256_file(p) for p in sorted(d.iterdir()) if p.suffix == ".mcap"}


def collector_uploads(data: Path) -> list[dict[str, Any]]:
    import sqlite3

    db = sqlite3.connect(data / "collector.sqlite3")
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM uploads ORDER BY seq")]
    finally:
        db.close()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def make_segments(spool: Path, device: str, n: int, size: int, *, start: int = 0,
                  seed: int = 0, sparse: bool = False) -> list[Path]:
    """``n`` sealed segments of ``size`` bytes (random, or sparse zeros with a random head),
    written in ``active/`` and renamed into ``sealed/`` as the capture service does."""
    sealed = spool / "sealed"
    sealed.mkdir(parents=True, exist_ok=True)
    (spool / "active").mkdir(exist_ok=True)
    out = []
    for i in range(start, start + n):
        path = sealed / f"{device}-{i:08d}.mcap"
        part = spool / "active" / f"{path.name}.part"
        head = hashlib.sha256(f"{seed}:{i}".encode()).digest() * 4
        with part.open("wb") as fh:
            if sparse:
                fh.write(head)
                fh.truncate(size)
            else:
                block = head * 64  # 8 KiB that differ per segment
                left = size
                while left > 0:
                    piece = os.urandom(min(left, 65536)) if i % 2 else block[: min(left, 8192)]
                    fh.write(piece)
                    left -= len(piece)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(part, path)  # sealing is a rename: the file appears whole
        out.append(path)
    return out


def write_config(path: Path, *, url: str, spool: Path, token_file: Path,
                 device: str = DEVICE, reserve_mb: int = 0, keep_hours: float = 0.0,
                 **sync: Any) -> Path:
    """A device config on top of the simulated rig's profile."""

    def val(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return f'"{v}"'
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        return repr(v)

    lines = ['profile = "sim"', "[device]", f'id = "{device}"', "[spool]",
             f'path = "{spool}"', f"reserve_mb = {reserve_mb}", "[retention]",
             f"keep_verified_hours = {keep_hours}", "[sync]", f'url = "{url}"',
             f'token_file = "{token_file}"']
    lines += [f"{k} = {val(v)}" for k, v in sync.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@contextlib.contextmanager
def tus_sink(root: Path) -> Iterator[Server]:
    """The hash-and-discard tus server (tests/tussink.py) in a child process."""
    srv = _start([sys.executable, str(REPO / "tests" / "tussink.py"), "0"], r"listening (\d+)",
                 root, cwd=REPO)
    try:
        yield srv
    finally:
        srv.stop()
