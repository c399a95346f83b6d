"""Fault harness for the sync service: every sealed segment reaches the collector
byte-identical, exactly once, and nothing is deleted locally before it is verified.

A backlog grows while `wearcap sync` uploads it through a fault-injecting proxy to a
`wearcap collector` (both real child processes on 127.0.0.1). Faults are injected at random:
dropped connections, cuts mid-body, refused connections, stalls longer than the client's
timeouts, collector kill -9 and restart. The sync service itself is killed with SIGKILL at
random points and restarted. Then the faults stop, `wearcap sync --once` drains what is left,
and the harness checks every segment on the collector by SHA-256.

    python bench/harness_sync_faults.py                      # short run (20 faults, 3 kills)
    python bench/harness_sync_faults.py --faults 200 --kills 20 --json

Prints trials (sync processes started), faults, kills, segments, losses, duplicates and
early deletions; exit 0 only when nothing was lost, duplicated or deleted early.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from faultproxy import FaultProxy  # noqa: E402
from sync_servers import (  # noqa: E402
    DEVICE,
    collector_objects,
    enroll,
    make_segments,
    sha256_file,
    start_collector,
    write_config,
)

FAULTS = ("drop_all", "cut", "drop_next", "refuse", "stall", "collector_kill")
WEIGHTS = (4, 6, 2, 2, 2, 1)


def verified_on_collector(data: Path, seg_id: str) -> bool:
    db = sqlite3.connect(f"file:{data / 'collector.sqlite3'}?mode=ro", uri=True, timeout=10)
    try:
        row = db.execute("SELECT COUNT(*) FROM uploads WHERE segment_id = ? AND "
                         "state = 'verified'", (seg_id,)).fetchone()
        return bool(row[0])
    finally:
        db.close()


def upload_rows(data: Path) -> list[tuple[str, str]]:
    db = sqlite3.connect(f"file:{data / 'collector.sqlite3'}?mode=ro", uri=True, timeout=10)
    try:
        return list(db.execute("SELECT segment_id, state FROM uploads"))
    finally:
        db.close()


class Harness:
    def __init__(self, root: Path, *, faults: int, kills: int, seed: int, rate: float,
                 chunk: int, min_size: int, max_size: int, quiet: bool) -> None:
        self.root, self.rng = root, random.Random(seed)
        self.want_faults, self.want_kills = faults, kills
        self.chunk, self.min_size, self.max_size = chunk, min_size, max_size
        self.quiet = quiet
        self.spool = root / "spool"
        self.data = root / "collector"
        self.data.mkdir(parents=True)
        (root / "token").write_text(enroll(self.data) + "\n")
        self.collector = start_collector(self.data)
        self.proxy = FaultProxy(self.collector.port).start()
        self.proxy.rate = rate
        self.cfg = write_config(
            root / "agent.toml", url=self.proxy.url + "/files/", spool=self.spool,
            token_file=root / "token", chunk_bytes=chunk, connect_timeout=1.0,
            read_timeout=2.0, write_timeout=2.0, stall_seconds=2.0, backoff_base=0.05,
            backoff_cap=1.0, probe_seconds=0.3, rescan_seconds=1.0, once_attempts=50)
        self.expected: dict[str, str] = {}
        self.bytes = 0
        self.faults = {f: 0 for f in FAULTS}
        self.kills = self.trials = 0
        self.early_deletes: list[str] = []
        self._done = threading.Event()
        self._lock = threading.Lock()

    def log(self, msg: str) -> None:
        if not self.quiet:
            print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    # -- actors

    def seal_one(self) -> None:
        seq = len(self.expected)
        size = self.rng.randint(self.min_size, self.max_size)
        (path,) = make_segments(self.spool, DEVICE, 1, size, start=seq, seed=self.rng.random())
        self.expected[path.stem] = sha256_file(path)
        self.bytes += size

    def inject(self) -> None:
        kind = self.rng.choices(FAULTS, WEIGHTS)[0]
        p = self.proxy
        if kind == "drop_all":
            p.drop_all()
        elif kind == "cut":
            p.cut_after(self.rng.randint(1, 3 * self.chunk))
        elif kind == "drop_next":
            p.drop_next(self.rng.randint(1, 3))
        elif kind == "refuse":
            p.refuse()
            time.sleep(self.rng.uniform(0.2, 1.5))
            p.accept()
        elif kind == "stall":
            p.stall(self.rng.uniform(0.5, 3.0))
        elif kind == "collector_kill":
            self.collector.proc.send_signal(signal.SIGKILL)
            self.collector.proc.wait()
            time.sleep(self.rng.uniform(0.0, 0.5))
            self.collector = start_collector(self.data, self.collector.port)
        self.faults[kind] += 1

    def watch_deletions(self) -> None:
        """Whenever a sealed file vanishes, the collector must already hold it verified."""
        present: set[str] = set()
        while not self._done.is_set():
            now = {p.stem for p in (self.spool / "sealed").glob("*.mcap")}
            for gone in present - now:
                if not verified_on_collector(self.data, gone):
                    self.early_deletes.append(gone)
            present = now
            time.sleep(0.02)

    def start_sync(self, *args: str) -> subprocess.Popen[bytes]:
        self.trials += 1
        errlog = (self.root / f"sync-{self.trials}.log").open("wb")
        return subprocess.Popen([sys.executable, "-m", "agent", "sync", "--config",
                                 str(self.cfg), *args], cwd=REPO, stdout=errlog,
                                stderr=subprocess.STDOUT)

    # -- the run

    def run(self) -> dict[str, Any]:
        t0 = time.monotonic()
        for _ in range(3):
            self.seal_one()
        watcher = threading.Thread(target=self.watch_deletions, daemon=True)
        watcher.start()
        sync = self.start_sync()
        next_fault = time.monotonic() + self.rng.uniform(0.1, 0.5)
        next_kill = time.monotonic() + self.rng.uniform(0.5, 3.0)
        next_seal = time.monotonic() + 0.5
        try:
            while sum(self.faults.values()) < self.want_faults or self.kills < self.want_kills:
                now = time.monotonic()
                if now >= next_seal:
                    self.seal_one()
                    next_seal = now + self.rng.uniform(0.3, 1.2)
                if now >= next_fault and sum(self.faults.values()) < self.want_faults:
                    self.inject()
                    next_fault = now + self.rng.uniform(0.05, 0.5)
                if now >= next_kill and self.kills < self.want_kills:
                    sync.send_signal(signal.SIGKILL)
                    sync.wait()
                    self.kills += 1
                    self.log(f"kill -9 sync #{self.kills}; faults so far {self.faults}")
                    sync = self.start_sync()
                    next_kill = now + self.rng.uniform(0.5, 3.0)
                if sync.poll() is not None:  # service mode should not exit; restart it
                    sync = self.start_sync()
                time.sleep(0.02)
            # faults over: stop the service cleanly, then drain with --once
            sync.send_signal(signal.SIGTERM)
            sync.wait(timeout=30)
            self.proxy.rate = None
            drained = False
            for _ in range(5):
                if self.start_sync("--once").wait(timeout=600) == 0:
                    drained = True
                    break
        finally:
            if sync.poll() is None:
                sync.kill()
                sync.wait()
            self._done.set()
            watcher.join(timeout=5)
            self.proxy.close()
            self.collector.stop()
        return self.check(drained, time.monotonic() - t0)

    def check(self, drained: bool, elapsed: float) -> dict[str, Any]:
        held = collector_objects(self.data)
        rows = upload_rows(self.data)
        per_segment: dict[str, int] = {}
        for seg_id, _state in rows:
            per_segment[seg_id] = per_segment.get(seg_id, 0) + 1
        lost = sorted(s for s in self.expected if s not in held)
        mismatched = sorted(s for s, h in self.expected.items() if s in held and held[s] != h)
        duplicates = sorted(s for s, n in per_segment.items() if n > 1)
        unexpected = sorted(set(held) - set(self.expected))
        left_local = sorted(p.stem for p in (self.spool / "sealed").glob("*.mcap"))
        return {
            "trials": self.trials, "faults": sum(self.faults.values()),
            "fault_kinds": self.faults, "kills": self.kills,
            "segments": len(self.expected),
            "bytes": self.bytes,
            "proxy_bytes_up": self.proxy.bytes_up,
            "drained": drained, "losses": len(lost) + len(mismatched),
            "lost": lost, "mismatched": mismatched, "duplicates": len(duplicates) +
            len(unexpected), "duplicated": duplicates + unexpected,
            "early_deletes": len(self.early_deletes), "deleted_early": self.early_deletes,
            "left_local_unevicted": len(left_local), "elapsed_s": round(elapsed, 1),
        }


def run(*, faults: int = 20, kills: int = 3, seed: int = 1, rate: float = 3e6,
        chunk: int = 128 * 1024, min_size: int = 100_000, max_size: int = 1_500_000,
        quiet: bool = True, root: Path | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="wearcap-faults-") as tmp:
        h = Harness(Path(root or tmp), faults=faults, kills=kills, seed=seed, rate=rate,
                    chunk=chunk, min_size=min_size, max_size=max_size, quiet=quiet)
        return h.run()


def ok(result: dict[str, Any]) -> bool:
    return bool(result["drained"] and not result["losses"] and not result["duplicates"]
                and not result["early_deletes"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faults", type=int, default=20, help="network/server faults to inject")
    ap.add_argument("--kills", type=int, default=3, help="kill -9 of the sync service")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rate", type=float, default=3e6, help="link rate through the proxy, B/s")
    ap.add_argument("--chunk", type=int, default=128 * 1024, help="sync.chunk_bytes")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result = run(faults=args.faults, kills=args.kills, seed=args.seed, rate=args.rate,
                 chunk=args.chunk, quiet=args.json)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"trials {result['trials']}  faults {result['faults']} {result['fault_kinds']}  "
              f"kills {result['kills']}  segments {result['segments']}  "
              f"losses {result['losses']}  duplicates {result['duplicates']}  "
              f"deleted before verification {result['early_deletes']}  "
              f"drained {result['drained']}  ({result['elapsed_s']} s)")
    return 0 if ok(result) else 1


if __name__ == "__main__":
    raise SystemExit(main())
