"""Harness: kill -9 the collector at random points of uploads (between PATCHes, mid-body,
right after the last byte) and restart it on the same data directory.

Claims checked after every restart: an acknowledged offset is never lost, unacknowledged bytes
never count, and at the end every segment is stored once, byte-identical and verified.
Prints trials, kills and losses. ``--long`` runs many more kills.
"""

from __future__ import annotations

import os
import random
import sqlite3

from test_collector_cli import DEV, Child, enroll
from test_collector_support import TusClient, checksum, raw_partial_patch, sha256, wait_for

CHUNK = 64 * 1024


def test_kill9_at_random_points_loses_nothing(tmp_path, long_run):
    rng = random.Random(3)
    kills_wanted = 40 if long_run else 6
    data_dir = tmp_path / "data"
    token = enroll(data_dir)
    segments = {seq: os.urandom(rng.randrange(200_000, 600_000))
                for seq in range(24 if long_run else 4)}
    child = Child(data_dir)
    client = TusClient(child.url, token)
    kills = regressions = phantom = 0
    kinds: dict[str, int] = {}
    acked: dict[int, int] = {}
    locations: dict[int, str] = {}

    def restart() -> None:
        nonlocal child, client, kills
        child.kill9()
        client.close()
        kills += 1
        child = Child(data_dir)
        client = TusClient(child.url, token)

    try:
        for seq, payload in segments.items():
            while True:
                r = client.create(DEV, seq, payload)  # also how a client finds its URL again
                assert r.status_code == 201, r.text
                path = "/files/" + r.headers["location"].rsplit("/", 1)[1]
                locations[seq] = path
                head = client.head(path)
                offset = int(head.headers["upload-offset"])
                if offset < acked.get(seq, 0):
                    regressions += 1
                if "wearcap-verified" in head.headers:
                    break
                chunk = payload[offset:offset + CHUNK]
                if kills < kills_wanted and rng.random() < 0.25:
                    how = rng.choice(("between", "mid-body", "last-byte"))
                    sock = None
                    if how == "mid-body" and len(chunk) > 1:
                        # unacknowledged bytes reach the disk, then the server dies
                        sent = rng.randrange(1, len(chunk))
                        sock = raw_partial_patch(child.port, path, token, offset, len(chunk),
                                                 chunk[:sent])
                        part = data_dir / "staging" / (path[7:] + ".part")
                        wait_for(lambda: part.stat().st_size == offset + sent,  # noqa: B023
                                 "unacknowledged bytes on disk")
                    elif how == "last-byte":  # dies somewhere around the final hash
                        rest = payload[offset:]
                        sock = raw_partial_patch(child.port, path, token, offset, len(rest),
                                                 rest)
                    kinds[how] = kinds.get(how, 0) + 1
                    restart()
                    if sock is not None:
                        sock.close()
                    if how == "mid-body":
                        after = int(client.head(path).headers["upload-offset"])
                        phantom += after != offset
                    continue
                r = client.patch(path, offset, chunk,
                                 **{"Upload-Checksum": checksum("sha1", chunk)})
                assert r.status_code == 204, r.text
                acked[seq] = int(r.headers["upload-offset"])
        while kills < kills_wanted:  # the rest of the kills hit an idle server
            kinds["idle"] = kinds.get("idle", 0) + 1
            restart()
        db = sqlite3.connect(data_dir / "collector.sqlite3")
        rows = db.execute("SELECT seq, state FROM uploads ORDER BY seq").fetchall()
        db.close()
        lost = 0
        for seq, payload in segments.items():
            stored = data_dir / "objects" / DEV / f"{DEV}-{seq:08d}.mcap"
            if not stored.exists() or sha256(stored.read_bytes()) != sha256(payload):
                lost += 1
            assert client.get(locations[seq]).content == payload
        leftovers = list((data_dir / "staging").iterdir())
        print(f"\ncollector kill -9 harness: {len(segments)} segments, {kills} kills {kinds}, "
              f"{regressions} acknowledged offsets lost, {phantom} unacknowledged bytes kept, "
              f"{lost} segments lost, "
              f"{len(rows) - len(segments)} duplicates, {len(leftovers)} staging leftovers")
        assert kills == kills_wanted
        assert regressions == 0 and phantom == 0 and lost == 0
        assert rows == [(seq, "verified") for seq in segments]
        assert leftovers == []
    finally:
        client.close()
        child.stop()
