"""Harness: kill -9 a collector node at random points of a PATCH with ``--staging s3`` (while
the body arrives, while it is aggregated into parts and sent, around the commit, during the
completion and read-back of the last PATCH), then continue the upload on the other node.

Two real node processes share a real PostgreSQL and a real SeaweedFS (the servers the tests
start). After every kill the state the dead node left is classified (what it had written to
the bucket and the store) and the device goes on from the offset the other node gives it.
Claims checked: an acknowledged offset is never lost, bytes never acknowledged are never
counted unless the node committed them, and at the end every segment is stored once, its
bytes hash to the metadata, and nothing staged is left in the bucket. Prints trials, kill
points and losses. ``--long`` runs 100 kills.

The nodes run with a 3 s upload lease instead of 6 s (a test setting, so that a hundred
kills do not spend ten minutes waiting for dead nodes' leases to lapse).
"""

from __future__ import annotations

import os
import random
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from agent.collector import auth
from agent.collector.store import Store, Upload, open_store
from tests.conftest import REPO
from tests.pg import PgServer
from tests.seaweed import Seaweed
from tests.test_collector_support import TusClient, raw_partial_patch, sha256, wait_for

pytestmark = pytest.mark.services
DEV = "crash-s3-01"
LEASE = 3.0
PART_MIB = 5
NODE = """\
import sys
import agent.collector.s3staging as s
s.LEASE_SECONDS = float(sys.argv[1])
s.LEASE_RENEW = s.LEASE_SECONDS / 3
from agent.cli import main
raise SystemExit(main(sys.argv[2:]))
"""


class Node:
    """``wearcap collector --store postgresql://... --staging s3`` as a child process."""

    def __init__(self, index: int, data: Path, store_url: str, s3: Seaweed,
                 bucket: str) -> None:
        self.index, self.data = index, data
        self.args = ["collector", "--data", str(data), "--listen", "127.0.0.1:0",
                     "--store", store_url, "--s3-bucket", bucket,
                     "--s3-endpoint", s3.endpoint, "--staging", "s3",
                     "--s3-part-mib", str(PART_MIB)]
        self.env = {**os.environ, **s3.env()}
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.start()

    def start(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        with open(self.data / "collector.log", "a") as err:
            self.proc = subprocess.Popen([sys.executable, "-c", NODE, str(LEASE), *self.args],
                                         cwd=REPO, stdout=subprocess.PIPE, stderr=err,
                                         text=True, env=self.env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)/files/", line)
        assert m, f"no startup line: {line!r}\n{(self.data / 'collector.log').read_text()}"
        self.port = int(m.group(1))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(20)

    def scratch_bytes(self) -> int:
        return sum(p.stat().st_size for p in (self.data / "scratch").glob("*.patch"))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def servers(pg_server: PgServer, s3_server: Seaweed) -> tuple[PgServer, Seaweed]:
    return pg_server, s3_server


def read_reply(sock: socket.socket, timeout: float) -> int | None:
    """The Upload-Offset of a 204 that reached the client before the node died, else None."""
    data = b""
    deadline = time.monotonic() + timeout
    while b"\r\n\r\n" not in data:
        left = max(0.0, deadline - time.monotonic())
        if not select.select([sock], [], [], left)[0]:
            return None
        try:
            chunk = sock.recv(65536)
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    m = re.search(r"(?im)^upload-offset:\s*(\d+)", head)
    return int(m.group(1)) if head.startswith("HTTP/1.1 204") and m else None


class Bucket:
    def __init__(self, s3: Seaweed, bucket: str) -> None:
        self.c, self.bucket = s3.client(), bucket

    def keys(self, prefix: str = "") -> list[str]:
        out: list[str] = []
        token: dict[str, Any] = {}
        while True:
            page = self.c.list_objects_v2(Bucket=self.bucket, Prefix=prefix, **token)
            out += [o["Key"] for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return out
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def multipart(self, key: str) -> dict[str, int]:
        """Multipart uploads in progress for ``key``: upload id -> parts sent."""
        ups = self.c.list_multipart_uploads(Bucket=self.bucket, Prefix=key).get("Uploads", [])
        return {u["UploadId"]: len(self.c.list_parts(Bucket=self.bucket, Key=key,
                                                      UploadId=u["UploadId"])
                                   .get("Parts", []))
                for u in ups if u["Key"] == key}


def classify(before: Upload, after: Upload, seen: tuple[list[str], dict[str, int]],
             bucket: Bucket, key: str) -> str:
    """Where the node was when it died, from what it left in the store and the bucket
    compared with what they held before its PATCH (``seen``: tails, multipart parts)."""
    if after.state == "verified":
        return "verified, reply lost"
    if after.state == "complete":
        return "completing" if key in bucket.keys(key) else "last byte committed"
    if after.offset > before.offset:
        return "committed, reply lost"
    tails, parts = seen
    if bucket.multipart(key) != parts:
        return "parts sent, not committed"
    if set(bucket.keys(f".staging/{before.id}/")) - set(tails):
        return "tail written, not committed"
    return "received, nothing staged"


def test_kill9_of_a_node_at_random_points_of_s3_staging_loses_nothing(
        tmp_path: Path, servers: tuple[PgServer, Seaweed], long_run: bool) -> None:
    pg, s3 = servers
    rng = random.Random(11)
    kills_wanted = 100 if long_run else 5
    bucket_name = "crash-" + os.urandom(3).hex()
    s3.client().create_bucket(Bucket=bucket_name)
    bucket = Bucket(s3, bucket_name)
    store_url = pg.new_database()
    store: Store = open_store(store_url)
    token = auth.enroll(store, DEV)
    nodes = [Node(i, tmp_path / f"node{i}", store_url, s3, bucket_name) for i in range(2)]
    clients = [TusClient(n.url, token) for n in nodes]
    n_segments = 20 if long_run else 2
    segments: dict[int, bytes] = {}
    kinds: Counter[str] = Counter()
    kills = regressions = phantom = retries_409 = 0
    latency = {0: 0.5, 1: 0.5}  # seconds from a PATCH's last body byte to its reply
    cur = 0
    ready = True

    def restart(i: int) -> None:
        nonlocal kills
        nodes[i].kill9()
        kills += 1
        clients[i].close()
        nodes[i].start()
        clients[i] = TusClient(nodes[i].url, token)

    try:
        seq = -1
        while len(segments) < n_segments or kills < kills_wanted:  # more segments if need be
            seq += 1
            payload = segments[seq] = os.urandom(rng.randrange(6 << 20, 12 << 20))
            key = f"{DEV}/{DEV}-{seq:08d}.mcap"
            acked = 0
            loc = ""
            while True:
                c = clients[cur]
                r = c.create(DEV, seq, payload)  # also how a device finds its upload again
                assert r.status_code == 201, r.text
                loc = "/files/" + r.headers["location"].rsplit("/", 1)[1]
                head = c.head(loc)
                assert head.status_code == 200, head.text
                offset = int(head.headers["upload-offset"])
                regressions += offset < acked
                if "wearcap-verified" in head.headers:
                    break
                up = store.upload(loc[7:])
                assert up is not None and up.offset == offset
                chunk = payload[offset:offset + rng.choice((1, 2, 3, 4)) * (1 << 20)]
                # a kill only once the device got through to this node (no dead node's lease)
                if ready and kills < kills_wanted and rng.random() < 0.6:
                    ready = False
                    if rng.random() < 0.25 and len(chunk) > 1:  # dies while the body arrives
                        sent = rng.randrange(1, len(chunk))
                        sock = raw_partial_patch(nodes[cur].port, loc, token, offset,
                                                 len(chunk), chunk[:sent])
                        wait_for(lambda: nodes[cur].scratch_bytes() >= sent,  # noqa: B023
                                 "the body's first bytes in the node's scratch file")
                        restart(cur)
                        sock.close()
                        kind = "mid-body"
                        after = store.upload(up.id)
                        phantom += after is None or after.offset != up.offset
                    else:  # the whole body sent: dies somewhere in staging / commit / verify
                        seen = (bucket.keys(f".staging/{up.id}/"), bucket.multipart(key))
                        sock = raw_partial_patch(nodes[cur].port, loc, token, offset,
                                                 len(chunk), chunk)
                        wait_for(lambda: nodes[cur].scratch_bytes() >= len(chunk)  # noqa: B023
                                 or bool(select.select([sock], [], [], 0)[0]),  # noqa: B023
                                 "the body received")
                        time.sleep(rng.uniform(0, 0.6 * latency[cur]))
                        replied = read_reply(sock, 0.0)
                        restart(cur)
                        late = read_reply(sock, 0.2) if replied is None else replied
                        sock.close()
                        if late is not None:
                            acked = late
                            kind = "after the reply"
                        else:
                            after = store.upload(up.id)
                            assert after is not None
                            kind = classify(up, after, seen, bucket, key)
                    kinds[kind] += 1
                    cur = 1 - cur  # the device goes on through the other node
                    continue
                t0 = time.monotonic()
                r = c.patch(loc, offset, chunk)
                if r.status_code == 409:  # the dead node's lease has not lapsed yet
                    retries_409 += 1
                    time.sleep(0.5)
                    continue
                assert r.status_code == 204, r.text
                latency[cur] = 0.7 * latency[cur] + 0.3 * (time.monotonic() - t0)
                acked = int(r.headers["upload-offset"])
                ready = True
                if "wearcap-verified" in r.headers:
                    break
        lost = 0
        c = clients[cur]
        for seq, payload in segments.items():
            key = f"{DEV}/{DEV}-{seq:08d}.mcap"
            body = bucket.c.get_object(Bucket=bucket_name, Key=key)["Body"].read()
            lost += sha256(body) != sha256(payload)
            r = c.create(DEV, seq, payload)
            assert r.headers.get("wearcap-verified") == f"sha256={sha256(payload)}"
        rows = store._rows(  # type: ignore[attr-defined]
            "SELECT seq, state FROM uploads ORDER BY seq")
        tails = bucket.keys(".staging/")
        scratch = sum(len(list((n.data / "scratch").glob("*.patch"))) for n in nodes)
        orphans = sum(len(bucket.multipart(f"{DEV}/{DEV}-{seq:08d}.mcap")) for seq in segments)
        print(f"\nS3 staging kill -9 harness: {len(segments)} segments "
              f"({sum(map(len, segments.values())) >> 20} MiB), {kills} kills "
              f"{dict(sorted(kinds.items()))}; {regressions} acknowledged offsets lost, "
              f"{phantom} unacknowledged bytes counted, {lost} segments lost or corrupt, "
              f"{len(rows) - len(segments)} duplicates, {len(tails)} staged tails left, "
              f"{orphans} unfinished multipart uploads left, {scratch} scratch files left; "
              f"{retries_409} PATCHes refused while a dead node's lease ran out")
        assert kills == kills_wanted
        assert regressions == 0 and phantom == 0 and lost == 0
        assert [(row["seq"], row["state"]) for row in rows] == \
            [(seq, "verified") for seq in segments]
        assert tails == [] and orphans == 0
        assert scratch == 0
    finally:
        for cl in clients:
            cl.close()
        for n in nodes:
            n.stop()
        store.close()
