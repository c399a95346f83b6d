"""Load harness: hundreds of simulated devices upload to the reference deployment (HAProxy,
collector nodes, PostgreSQL, SeaweedFS), and one node is killed with kill -9 mid-run.

Each device has its own id and token and uploads several segments over real tus through the
balancer (create, HEAD, PATCH in chunks; on any failure it asks the server for its offset and
goes on from there, as the sync service does). The same load runs against one node, then
two, then two of which one is killed with kill -9 mid-run and restarted; each node is held
to the same CPU quota (deploy/fleet.py), so the ratio measures the collector, not the
machine. Prints, per run: segments verified, lost and duplicated, MB/s, p99 request latency,
node CPU seconds per GB stored (all nodes, and each node's CPU over the run's GB), the CPU
seconds of every part (nodes, clients, PostgreSQL, SeaweedFS, HAProxy) and the share of
100 ms periods in which each node hit its quota (near 100 %: the nodes were the
bottleneck); then the 2-node/1-node ratio.

    nice -n 10 .venv/bin/python bench/bench_fleet.py                 # 200 devices x 3
    .venv/bin/python bench/bench_fleet.py --devices 20 --segments 2  # quick look
"""

from __future__ import annotations

import argparse
import hashlib
import queue
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agent.contract import encode_metadata, segment_metadata  # noqa: E402
from deploy.fleet import Fleet  # noqa: E402
from tests.pg import PgServer  # noqa: E402
from tests.seaweed import Seaweed  # noqa: E402

OCTET = "application/offset+octet-stream"


def segment_bytes(device: str, seq: int, size: int) -> bytes:
    block = hashlib.sha256(f"{device}:{seq}".encode()).digest() * 256  # 8 KiB per segment
    return (block * (size // len(block) + 1))[:size]


class Device:
    def __init__(self, did: str, token: str, url: str, segments: int, size: int,
                 chunk: int, latencies: list[float], stats: dict[str, int]) -> None:
        self.id, self.url, self.n, self.size, self.chunk = did, url, segments, size, chunk
        self.headers = {"Tus-Resumable": "1.0.0", "Authorization": f"Bearer {token}"}
        self.latencies, self.stats = latencies, stats
        self.http = httpx.Client(timeout=httpx.Timeout(30.0, connect=5.0))

    def _req(self, method: str, url: str, **kw: object) -> httpx.Response | None:
        t = time.perf_counter()
        try:
            r = self.http.request(method, url, **kw)  # type: ignore[arg-type]
        except httpx.HTTPError:
            self.stats["network_errors"] += 1
            return None
        self.latencies.append(time.perf_counter() - t)
        return r

    def run(self) -> None:
        for seq in range(self.n):
            self.upload(seq)
        self.http.close()

    def upload(self, seq: int) -> None:
        data = segment_bytes(self.id, seq, self.size)
        sha = hashlib.sha256(data).hexdigest()
        meta = encode_metadata(segment_metadata(self.id, seq, sha))
        loc: str | None = None
        offset: int | None = None
        for attempt in range(400):
            if attempt:
                time.sleep(min(2.0, 0.05 * attempt))
            if loc is None:
                r = self._req("POST", self.url, headers={
                    **self.headers, "Upload-Length": str(len(data)), "Upload-Metadata": meta})
                if r is None or r.status_code != 201:
                    self.stats["retries"] += 1
                    continue
                loc = r.headers["location"]
                if r.headers.get("wearcap-verified") == f"sha256={sha}":
                    return
                offset = int(r.headers["upload-offset"])
            if offset is None:
                r = self._req("HEAD", loc, headers=self.headers)
                if r is None or r.status_code != 200:
                    if r is not None and r.status_code in (404, 410):
                        loc = None
                    self.stats["retries"] += 1
                    continue
                if r.headers.get("wearcap-verified") == f"sha256={sha}":
                    return
                offset = int(r.headers["upload-offset"])
            body = data[offset:offset + self.chunk]
            r = self._req("PATCH", loc, content=body, headers={
                **self.headers, "Upload-Offset": str(offset), "Content-Type": OCTET})
            self.stats["bytes_sent"] += len(body)
            if r is None or r.status_code != 204:
                offset = None
                self.stats["retries"] += 1
                continue
            if r.headers.get("wearcap-verified") == f"sha256={sha}":
                return
            offset = int(r.headers["upload-offset"])
        self.stats["gave_up"] += 1


def run_load(fleet: Fleet, devices: int, segments: int, size: int, chunk: int,
             workers: int, kill: bool) -> dict[str, Any]:
    ids = [f"bench-{i:04d}" for i in range(devices)]
    tokens = fleet.enroll_many(ids)
    latencies: list[float] = []
    stats = {"retries": 0, "network_errors": 0, "bytes_sent": 0, "gave_up": 0}
    todo: queue.Queue[Device] = queue.Queue()
    for d in ids:
        todo.put(Device(d, tokens[d], fleet.url, segments, size, chunk, latencies, stats))
    done = [0]

    def worker() -> None:
        while True:
            try:
                dev = todo.get_nowait()
            except queue.Empty:
                return
            dev.run()
            done[0] += 1

    cpu0 = fleet.node_cpu()
    svc0 = fleet.service_cpu()
    thr0 = fleet.throttled()
    client0 = time.process_time()
    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    killed = False
    while any(t.is_alive() for t in threads):
        if kill and not killed and done[0] >= devices * 0.4:
            fleet.kill9(0)
            time.sleep(1.0)
            fleet.restart(0)
            killed = True
        time.sleep(0.2)
    elapsed = time.perf_counter() - t0
    client_cpu = time.process_time() - client0
    cpu = {i: c - cpu0.get(i, 0.0) for i, c in fleet.node_cpu().items()}
    svc = {k: v - svc0.get(k, 0.0) for k, v in fleet.service_cpu().items()}
    thr = {i: (p - thr0[i][0], t - thr0[i][1]) for i, (p, t) in fleet.throttled().items()}
    objects = fleet.objects()
    expected = {f"{d}/{d}-{s:08d}.mcap" for d in ids for s in range(segments)}
    verified = len(expected & objects.keys())
    stray = [k for k in objects if k.startswith("bench-") and k not in expected]
    from agent.collector.store import open_store

    store = open_store(fleet.store_url)
    rows = store._rows(  # type: ignore[attr-defined]
        "SELECT device, segment_id, COUNT(*) AS n FROM uploads WHERE state = 'verified' "
        "GROUP BY device, segment_id HAVING COUNT(*) > 1")
    store.close()
    stored_gb = verified * size / 1e9
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else float("nan")
    return {"devices": devices, "segments": devices * segments, "verified": verified,
            "lost": len(expected) - verified, "duplicated": len(rows) + len(stray),
            "mb_s": verified * size / 1e6 / elapsed, "p99_ms": p99 * 1000,
            "requests": len(latencies), "seconds": elapsed, "killed": killed,
            **{f"cpu_s_per_gb_node{i}": c / stored_gb if stored_gb else 0.0
               for i, c in cpu.items()},
            "cpu_s_per_gb_nodes": sum(cpu.values()) / stored_gb if stored_gb else 0.0,
            "cpu_s": {**{f"node{i}": c for i, c in cpu.items()}, "clients": client_cpu, **svc},
            "throttled": {f"node{i}": t / p if p else 0.0 for i, (p, t) in thr.items()},
            **stats}


PHASES = (("1 node", 1, False), ("2 nodes", 2, False),
          ("2 nodes, node0 killed -9 mid-run and restarted", 2, True))


def report(name: str, r: dict[str, Any], quota: str) -> None:
    cpu = ", ".join(f"node{k[-1]} {v:.1f}" for k, v in r.items()
                    if k.startswith("cpu_s_per_gb_node") and k[-1].isdigit())
    cpu_s: dict[str, float] = r["cpu_s"]
    thr: dict[str, float] = r["throttled"]
    print(f"{name} (quota {quota}): {r['devices']} devices, {r['segments']} segments: "
          f"{r['verified']} verified, {r['lost']} lost, {r['duplicated']} duplicated; "
          f"{r['mb_s']:.2f} MB/s; p99 request {r['p99_ms']:.0f} ms over {r['requests']} "
          f"requests; node CPU s per GB stored: all nodes {r['cpu_s_per_gb_nodes']:.1f} "
          f"({cpu}); retries {r['retries']}, network errors "
          f"{r['network_errors']}, gave up {r['gave_up']}", flush=True)
    print("  CPU seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in cpu_s.items())
          + f" in {r['seconds']:.1f} s; 100 ms periods in which a node hit its quota: "
          + ", ".join(f"{k} {v:.0%}" for k, v in thr.items()), flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description="collector fleet load harness")
    p.add_argument("--devices", type=int, default=200)
    p.add_argument("--segments", type=int, default=3)
    p.add_argument("--size", type=int, default=512 * 1024, help="bytes per segment")
    p.add_argument("--chunk", type=int, default=256 * 1024, help="bytes per PATCH")
    p.add_argument("--workers", type=int, default=24, help="devices uploading at once")
    p.add_argument("--cpu-quota", type=float, default=0.25,
                   help="each node's share of one CPU (the same for every node); small "
                        "enough that the nodes, not what they share, are the bottleneck")
    p.add_argument("--quota-method", choices=("auto", "cgroup", "duty"), default="auto",
                   help="a cgroup (CFS bandwidth), or SIGSTOP/SIGCONT duty cycles")
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="wearcap-bench-fleet-"))
    pg = PgServer.start(root / "postgres")
    try:
        s3 = Seaweed.start(root / "seaweedfs")
    except BaseException:
        pg.stop()
        raise
    results = []
    try:
        for i, (name, nodes, kill) in enumerate(PHASES):
            fleet = Fleet.start(root / f"fleet{i}", nodes=nodes, cpu_quota=args.cpu_quota,
                                quota_method=args.quota_method, pg=pg, s3=s3)
            try:
                r = run_load(fleet, args.devices, args.segments, args.size, args.chunk,
                             args.workers, kill=kill)
                quota = fleet.quota_description()
            finally:
                fleet.stop(services=False)
            results.append(r)
            report(name, r, quota)
    finally:
        pg.stop()
        s3.stop()
    one, two, killed = (float(r["mb_s"]) for r in results)
    print(f"throughput 2 nodes / 1 node, each node held to {quota}: {two / one:.2f}x "
          f"(budget >= 1.6x); with node0 killed -9 mid-run: {killed / one:.2f}x")
    return 0 if all(r["lost"] == 0 and r["duplicated"] == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
