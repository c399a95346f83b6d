"""The reference deployment on one machine: PostgreSQL, SeaweedFS (S3, with auth), N stateless
collector nodes, and HAProxy in front of them (TCP, PROXY protocol v2, health checks).

    python -m deploy.fleet --dir /tmp/fleet --nodes 2        # start it all, print the URL,
                                                             # run until Ctrl-C
    with Fleet.start(root, nodes=2) as f: f.url, f.kill9(0), f.restart(0), f.enroll("dev")

Every node runs ``wearcap collector --store postgresql://... --s3-bucket ... --staging s3
--trusted-proxy 127.0.0.1 --public-url <balancer>``; any node serves any request, so a device
whose node dies resumes through the balancer on another from the offset in PostgreSQL.
``cpu_quota`` (a fraction of one CPU) holds each node to the same share through a cgroup, so
that a 1-node vs 2-node comparison measures the collector, not the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.pg import PgServer  # noqa: E402
from tests.seaweed import Seaweed  # noqa: E402

HAPROXY_CFG = """\
global
    maxconn 8000
defaults
    mode tcp
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    retries 2
    option redispatch
frontend collectors
    bind 127.0.0.1:{port}
    default_backend nodes
backend nodes
    balance leastconn
{servers}
"""


SERVER_OPTIONS = ("send-proxy-v2 check check-send-proxy inter 300ms fall 2 rise 1 "
                  "observe layer4 error-limit 1 on-error mark-down")
"""Each node gets the client address by PROXY v2; a refused connection marks it down at once
(kill -9), health checks every 300 ms bring it back."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CpuQuota:
    """A cgroup (v1 ``cpu`` controller, else v2) limiting its processes to ``share`` of a CPU."""

    def __init__(self, name: str, share: float) -> None:
        self.path: Path | None = None
        v1, v2 = Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup")
        try:
            if (v1 / "cpu.cfs_quota_us").exists():
                path = v1 / name
                path.mkdir(exist_ok=True)
                (path / "cpu.cfs_period_us").write_text("100000")
                (path / "cpu.cfs_quota_us").write_text(str(int(share * 100000)))
            elif "cpu" in (v2 / "cgroup.controllers").read_text().split():
                path = v2 / name
                path.mkdir(exist_ok=True)
                (path / "cpu.max").write_text(f"{int(share * 100000)} 100000")
            else:
                return
        except OSError:
            return
        self.path = path

    def add(self, pid: int) -> bool:
        if self.path is None:
            return False
        try:
            (self.path / "cgroup.procs").write_text(str(pid))
            return True
        except OSError:
            return False

    def remove(self) -> None:
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.rmdir()


@dataclass
class Node:
    index: int
    port: int
    data: Path
    proc: subprocess.Popen[str] | None = None
    quota: CpuQuota | None = None

    def cpu_seconds(self) -> float:
        """User+system CPU of the running process (it has no children)."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Fleet:
    root: Path
    pg: PgServer
    s3: Seaweed
    store_url: str
    bucket: str
    lb_port: int
    nodes: list[Node] = field(default_factory=list)
    haproxy: subprocess.Popen[bytes] | None = None
    cpu_quota: float | None = None
    cpu_used: dict[int, float] = field(default_factory=dict)
    """CPU seconds of node processes that have exited (killed, restarted)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.lb_port}/files/"

    @classmethod
    def start(cls, root: Path, *, nodes: int = 2, cpu_quota: float | None = None,
              pg: PgServer | None = None, s3: Seaweed | None = None) -> Fleet:
        if shutil.which("haproxy") is None:
            raise RuntimeError("haproxy not found (install.sh --dev installs it)")
        root.mkdir(parents=True, exist_ok=True)
        pg = pg or PgServer.start(root / "postgres")
        s3 = s3 or Seaweed.start(root / "seaweedfs")
        bucket = "fleet-" + os.urandom(3).hex()
        s3.client().create_bucket(Bucket=bucket)
        f = cls(root, pg, s3, pg.new_database(), bucket, free_port(), cpu_quota=cpu_quota)
        for i in range(nodes):
            f.nodes.append(Node(i, free_port(), root / f"node{i}"))
        # migrations once, before the nodes start (they would serialize on the lock anyway)
        from agent.collector.store import open_store

        open_store(f.store_url).close()
        try:
            for n in f.nodes:
                f._start_node(n)
            f._start_haproxy()
        except BaseException:
            f.stop()
            raise
        return f

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        return {**os.environ, **self.s3.env(), "PYTHONUNBUFFERED": "1"}

    def _start_node(self, n: Node) -> None:
        n.data.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "agent", "collector", "--data", str(n.data),
               "--listen", f"127.0.0.1:{n.port}", "--store", self.store_url,
               "--s3-bucket", self.bucket, "--s3-endpoint", self.s3.endpoint,
               "--staging", "s3", "--trusted-proxy", "127.0.0.1",
               "--public-url", f"http://127.0.0.1:{self.lb_port}"]
        log = open(n.data / "collector.log", "a")  # noqa: SIM115
        n.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True,
                                  cwd=REPO, env=self.env(), start_new_session=True)
        log.close()
        if self.cpu_quota:
            if n.quota is None:
                n.quota = CpuQuota(f"wearcap-node{n.index}-{os.getpid()}", self.cpu_quota)
            if not n.quota.add(n.proc.pid):
                subprocess.run(["taskset", "-pc", str(n.index % (os.cpu_count() or 1)),
                                str(n.proc.pid)], capture_output=True, check=False)
        deadline = time.monotonic() + 60
        while "listening on" not in (n.data / "collector.log").read_text():
            if n.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"node {n.index} did not start:\n"
                                   + (n.data / "collector.log").read_text()[-3000:])
            time.sleep(0.1)

    def _start_haproxy(self) -> None:
        servers = "\n".join(f"    server n{n.index} 127.0.0.1:{n.port} {SERVER_OPTIONS}"
                            for n in self.nodes)
        cfg = self.root / "haproxy.cfg"
        cfg.write_text(HAPROXY_CFG.format(port=self.lb_port, servers=servers))
        log = open(self.root / "haproxy.log", "wb")  # noqa: SIM115
        self.haproxy = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                import httpx

                if httpx.options(self.url, timeout=2).status_code == 204:
                    return
            except Exception:
                pass
            if self.haproxy.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("haproxy did not start:\n" +
                                   (self.root / "haproxy.log").read_text()[-2000:])
            time.sleep(0.2)

    def enroll(self, device: str) -> str:
        from agent.collector import auth
        from agent.collector.store import open_store

        store = open_store(self.store_url)
        try:
            return auth.enroll(store, device)
        finally:
            store.close()

    def enroll_many(self, devices: list[str]) -> dict[str, str]:
        from agent.collector import auth
        from agent.collector.store import open_store

        store = open_store(self.store_url)
        try:
            return {d: auth.enroll(store, d) for d in devices}
        finally:
            store.close()

    def kill9(self, i: int) -> None:
        n = self.nodes[i]
        if n.proc is not None and n.proc.poll() is None:
            self.cpu_used[i] = self.cpu_used.get(i, 0.0) + n.cpu_seconds()
            os.kill(n.proc.pid, signal.SIGKILL)
            n.proc.wait()

    def restart(self, i: int) -> None:
        self._start_node(self.nodes[i])

    def node_cpu(self) -> dict[int, float]:
        return {n.index: self.cpu_used.get(n.index, 0.0) + n.cpu_seconds() for n in self.nodes}

    def objects(self) -> dict[str, int]:
        c = self.s3.client()
        out: dict[str, int] = {}
        token: dict[str, Any] = {}
        while True:
            page = c.list_objects_v2(Bucket=self.bucket, **token)
            out.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
            if not page.get("IsTruncated"):
                return out
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def stop(self, services: bool = True) -> None:
        for n in self.nodes:
            if n.proc is not None and n.proc.poll() is None:
                n.proc.terminate()
                try:
                    n.proc.wait(15)
                except subprocess.TimeoutExpired:
                    n.proc.kill()
                    n.proc.wait()
            if n.quota is not None:
                n.quota.remove()
        if self.haproxy is not None and self.haproxy.poll() is None:
            self.haproxy.terminate()
            self.haproxy.wait(10)
        if services:
            self.pg.stop()
            self.s3.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", required=True, type=Path)
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--cpu-quota", type=float, default=None,
                   help="each node's share of one CPU (e.g. 0.5)")
    args = p.parse_args()
    fleet = Fleet.start(args.dir, nodes=args.nodes, cpu_quota=args.cpu_quota)
    print(f"fleet up: {fleet.url} ({args.nodes} nodes; PostgreSQL {fleet.store_url}; "
          f"SeaweedFS {fleet.s3.endpoint} bucket {fleet.bucket}); Ctrl-C stops it", flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        fleet.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
