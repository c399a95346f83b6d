"""The reference deployment (deploy/fleet.py): two stateless nodes behind HAProxy on one
PostgreSQL and one SeaweedFS. A device's sync service uploads through the balancer while
each node in turn is killed with kill -9 and restarted: every segment verified once, no
second copy, and nothing sent twice beyond the chunks in flight at the kills."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import NOT_APPLICABLE, REPO
from sync_servers import DEVICE, make_segments, sha256_file, write_config

from tests.pg import PgServer
from tests.seaweed import Seaweed

pytestmark = pytest.mark.services


def test_device_survives_kill_9_of_each_node_behind_the_balancer(
        tmp_path: Path, long_run: bool, pg_server: PgServer, s3_server: Seaweed) -> None:
    import os

    if shutil.which("haproxy") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("haproxy not installed (install.sh --dev installs it)")
        pytest.skip("haproxy not installed")
    from deploy.fleet import Fleet

    n, size = (8, 9_000_000) if long_run else (3, 6_000_000)
    chunk = 4 * 1024 * 1024
    fleet = Fleet.start(Path(tempfile.mkdtemp(prefix="wearcap-fleet-")), nodes=2,
                        pg=pg_server, s3=s3_server)
    try:
        token = fleet.enroll(DEVICE)
        spool = tmp_path / "spool"
        paths = make_segments(spool, DEVICE, n, size)
        (tmp_path / "token").write_text(token)
        cfg = write_config(tmp_path / "agent.toml", url=fleet.url, spool=spool,
                           token_file=tmp_path / "token", keep_hours=24.0, chunk_bytes=chunk,
                           bandwidth_kbps=16_000, backoff_base=1.0, backoff_cap=4.0,
                           once_attempts=30)
        child = subprocess.Popen([sys.executable, "-m", "agent", "sync", "--config", str(cfg),
                                  "--once", "--json"], cwd=REPO, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        kills = 0
        for victim in (0, 1):
            time.sleep(1.5)
            fleet.kill9(victim)
            kills += 1
            time.sleep(0.5)
            fleet.restart(victim)
        out, err = child.communicate(timeout=600)
        assert child.returncode == 0, err[-3000:]
        summary = json.loads(out)
        objects = fleet.objects()
        want = {f"{DEVICE}/{p.name}": p.stat().st_size for p in paths}
        assert objects == want  # each segment once, nothing staged left
        assert sorted(summary["verified"]) == sorted(p.stem for p in paths)
        total = sum(want.values())
        # a kill costs the chunk in flight, plus chunks refused while the dead node's lease
        # on the upload runs out (6 s)
        assert summary["bytes_sent"] <= total + kills * 6 * chunk, summary
        c = fleet.s3.client()
        for p in paths:
            body = c.get_object(Bucket=fleet.bucket, Key=f"{DEVICE}/{p.name}")["Body"].read()
            import hashlib

            assert hashlib.sha256(body).hexdigest() == sha256_file(p)
        print(f"fleet: {n} segments, {kills} node kills (kill -9), {summary['bytes_sent']} "
              f"bytes sent for {total}; 0 lost, 0 duplicated")
        # the load harness's short version, on the same deployment
        from bench.bench_fleet import run_load

        r = run_load(fleet, 6, 2, 300_000, 128 * 1024, 3, kill=True)
        assert r["killed"] and r["verified"] == 12, r
        assert r["lost"] == 0 and r["duplicated"] == 0 and r["gave_up"] == 0, r
        assert set(r["cpu_s"]) >= {"node0", "node1", "clients", "postgresql", "seaweedfs",
                                   "haproxy"}, r
        assert r["cpu_s"]["postgresql"] > 0 and r["cpu_s"]["seaweedfs"] > 0, r
    finally:
        fleet.stop(services=False)


@pytest.mark.parametrize("method", ["cgroup", "duty"])
def test_a_cpu_quota_holds_a_busy_process_to_its_share(method: str) -> None:
    """The quota the fleet bench relies on really limits a process here (a busy loop would
    otherwise take a whole core); load from elsewhere can only lower what it gets."""
    from deploy.fleet import CpuQuota, make_quota, tree_cpu

    if method == "cgroup" and CpuQuota("wearcap-probe", 0.2).path is None:
        pytest.skip(f"{NOT_APPLICABLE}no writable cgroup cpu controller "
                    "(the duty-cycle fallback is tested)")
    CpuQuota("wearcap-probe", 0.2).remove()
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    quota = make_quota(f"wearcap-test-{method}", 0.2, method)
    try:
        assert quota.add(busy.pid)
        c0, t0 = tree_cpu(busy.pid), time.monotonic()
        time.sleep(3)
        share = (tree_cpu(busy.pid) - c0) / (time.monotonic() - t0)
        periods, throttled = quota.throttled()
        print(f"quota 0.20 by {quota.method}: the busy loop got {share:.2f} CPU, "
              f"throttled in {throttled} of {periods} periods")
        assert share < 0.3  # the duty cycle may overrun by a poll interval per period
        assert throttled > 0
    finally:
        busy.kill()
        busy.wait()
        quota.remove()
