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
import threading
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


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of ``pid``, its reaped children and its live descendants:
    PostgreSQL's backends are children of the postmaster, which reaps them."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            f = _stat(int(d.name))
            if f is not None:
                children.setdefault(int(f[1]), []).append(int(d.name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        f = _stat(p)
        if f is None:
            continue
        total += sum(int(x) for x in f[11:15])  # utime stime cutime cstime
        todo.extend(children.get(p, []))
    return total / tick


class CpuQuota:
    """A cgroup (v1 ``cpu`` controller, else v2) limiting its processes to ``share`` of a CPU.

    The kernel's CFS bandwidth control: in every 100 ms period the group runs at most
    ``share`` x 100 ms, summed over its threads, then waits for the next period. Checked to
    work in this container (cgroup v1 ``cpu`` writable; a busy loop held to 0.2 CPU ran
    0.81 s in 4 s). ``throttled()`` says how often the group hit its quota, which shows
    whether the node was the bottleneck."""

    method = "cgroup CFS bandwidth"

    def __init__(self, name: str, share: float) -> None:
        self.path: Path | None = None
        v1, v2 = Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup")
        try:
            if (v1 / "cpu.cfs_quota_us").exists():
                path = v1 / name
                path.mkdir(exist_ok=True)
                (path / "cpu.cfs_period_us").write_text("100000")
                (path / "cpu.cfs_quota_us").write_text(str(int(share * 100000)))
                self.method = "cgroup v1 cpu.cfs_quota_us"
            elif "cpu" in (v2 / "cgroup.controllers").read_text().split():
                path = v2 / name
                path.mkdir(exist_ok=True)
                (path / "cpu.max").write_text(f"{int(share * 100000)} 100000")
                self.method = "cgroup v2 cpu.max"
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

    def throttled(self) -> tuple[int, int]:
        """(periods, periods in which the group was throttled) since it was made."""
        if self.path is None:
            return 0, 0
        try:
            stat = dict(line.split() for line in (self.path / "cpu.stat").read_text()
                        .splitlines() if line.strip())
        except (OSError, ValueError):
            return 0, 0
        return int(stat.get("nr_periods", 0)), int(stat.get("nr_throttled", 0))

    def remove(self) -> None:
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.rmdir()


class DutyCycleQuota:
    """The fallback where no cgroup is writable: a watcher thread reads the process's CPU
    clock every 5 ms and, once it has used ``share`` of the current 100 ms period, stops it
    (SIGSTOP) until the period ends (SIGCONT). Coarser than the kernel's (it may overrun by a
    poll interval per running thread) but the same for every node."""

    method = "duty cycle (SIGSTOP/SIGCONT)"
    PERIOD, POLL = 0.1, 0.005

    def __init__(self, name: str, share: float) -> None:
        self.share = share
        self.pid: int | None = None
        self.periods = self.stopped = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, pid: int) -> bool:
        self.remove()
        self.pid, self._stop = pid, threading.Event()
        self._thread = threading.Thread(target=self._run, args=(pid, self._stop), daemon=True)
        self._thread.start()
        return True

    @staticmethod
    def _cpu(clock: int) -> float | None:
        try:
            return time.clock_gettime(clock)
        except OSError:  # the process is gone
            return None

    def _run(self, pid: int, stop: threading.Event) -> None:
        # the process's CPU clock (Linux: MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)), to the
        # nanosecond and summed over its threads, where /proc/PID/stat counts 10 ms ticks
        clock = ((~pid) << 3) | 2
        budget = self.share * self.PERIOD
        while not stop.is_set():
            start = time.monotonic()
            used0 = self._cpu(clock)
            if used0 is None:
                return
            self.periods += 1
            while (left := start + self.PERIOD - time.monotonic()) > 0:
                used = self._cpu(clock)
                if used is None:
                    return
                if used - used0 >= budget:
                    self.stopped += 1
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGSTOP)
                    time.sleep(left)
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGCONT)
                    break
                time.sleep(min(self.POLL, left))

    def throttled(self) -> tuple[int, int]:
        return self.periods, self.stopped

    def remove(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.pid is not None:
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGCONT)


def make_quota(name: str, share: float, method: str = "auto") -> CpuQuota | DutyCycleQuota:
    """``method``: ``cgroup``, ``duty`` or ``auto`` (a cgroup if one can be made, else the
    duty cycle)."""
    if method in ("auto", "cgroup"):
        q = CpuQuota(name, share)
        if q.path is not None:
            return q
        if method == "cgroup":
            raise RuntimeError("no writable cgroup cpu controller for the CPU quota")
    return DutyCycleQuota(name, share)


@dataclass
class Node:
    index: int
    port: int
    data: Path
    proc: subprocess.Popen[str] | None = None
    quota: CpuQuota | DutyCycleQuota | None = None

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
    quota_method: str = "auto"
    cpu_used: dict[int, float] = field(default_factory=dict)
    """CPU seconds of node processes that have exited (killed, restarted)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.lb_port}/files/"

    @classmethod
    def start(cls, root: Path, *, nodes: int = 2, cpu_quota: float | None = None,
              quota_method: str = "auto", pg: PgServer | None = None,
              s3: Seaweed | None = None) -> Fleet:
        if shutil.which("haproxy") is None:
            raise RuntimeError("haproxy not found (install.sh --dev installs it)")
        root.mkdir(parents=True, exist_ok=True)
        pg = pg or PgServer.start(root / "postgres")
        s3 = s3 or Seaweed.start(root / "seaweedfs")
        bucket = "fleet-" + os.urandom(3).hex()
        s3.client().create_bucket(Bucket=bucket)
        f = cls(root, pg, s3, pg.new_database(), bucket, free_port(), cpu_quota=cpu_quota,
                quota_method=quota_method)
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
                n.quota = make_quota(f"wearcap-node{n.index}-{os.getpid()}", self.cpu_quota,
                                     self.quota_method)
            if not n.quota.add(n.proc.pid):
                raise RuntimeError(f"cannot hold node {n.index} to its CPU quota")
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

    def service_cpu(self) -> dict[str, float]:
        """CPU seconds so far of what the nodes share: PostgreSQL, SeaweedFS, HAProxy."""
        out = {"postgresql": tree_cpu(self.pg.proc.pid), "seaweedfs": tree_cpu(self.s3.proc.pid)}
        if self.haproxy is not None:
            out["haproxy"] = tree_cpu(self.haproxy.pid)
        return out

    def quota_description(self) -> str:
        if not self.cpu_quota:
            return "none"
        methods = {n.quota.method for n in self.nodes if n.quota is not None}
        return f"{self.cpu_quota:.2f} CPU per node by {', '.join(sorted(methods))}"

    def throttled(self) -> dict[int, tuple[int, int]]:
        return {n.index: n.quota.throttled() if n.quota else (0, 0) for n in self.nodes}

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
    p.add_argument("--quota-method", choices=("auto", "cgroup", "duty"), default="auto",
                   help="how the quota is held: a cgroup, or SIGSTOP/SIGCONT duty cycles")
    args = p.parse_args()
    fleet = Fleet.start(args.dir, nodes=args.nodes, cpu_quota=args.cpu_quota,
                        quota_method=args.quota_method)
    print(f"fleet up: {fleet.url} ({args.nodes} nodes; PostgreSQL {fleet.store_url}; "
          f"SeaweedFS {fleet.s3.endpoint} bucket {fleet.bucket}); Ctrl-C stops it", flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        fleet.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
