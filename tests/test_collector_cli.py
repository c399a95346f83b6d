"""``wearcap collector`` as a user runs it: child processes, exit codes, kill -9 mid-upload."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, run_cli
from test_collector_support import TusClient, raw_partial_patch, sha256, wait_for

DEV = "sim-0001"


class Child:
    """``python -m agent collector --data D --listen 127.0.0.1:0`` in a child process."""

    def __init__(self, data: Path, *extra: str) -> None:
        # the request log goes to a file: a pipe nobody drains would block the server
        self.log = data.parent / f"collector-{time.monotonic_ns()}.log"
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent", "collector", "--data", str(data),
                 "--listen", "127.0.0.1:0", *extra],
                cwd=REPO, stdout=subprocess.PIPE, stderr=err, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)/files/", line)
        assert m, f"no startup line: {line!r} {self.log.read_text()}"
        self.port = int(m.group(1))
        self.url = f"http://127.0.0.1:{self.port}"

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(20)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(20)
        return self.log.read_text()


@pytest.fixture
def child_factory():
    made: list[Child] = []

    def make(data: Path, *extra: str) -> Child:
        c = Child(data, *extra)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()


def enroll(data: Path, device: str = DEV) -> str:
    r = run_cli("collector", "enroll", device, "--data", str(data), "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["token"]


def test_bad_listen_exits_2():
    for bad in ("nonsense", "127.0.0.1:99999", ":80", "127.0.0.1:http"):
        r = run_cli("collector", "--data", "/tmp", "--listen", bad)
        assert r.returncode == 2, (bad, r.stderr)
        assert "--listen must be HOST:PORT" in r.stderr and "Traceback" not in r.stderr


def test_unwritable_data_exits_2(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    try:
        for data in (ro / "data", blocker / "data"):
            if os.geteuid() == 0 and data.parent == ro:
                continue  # root writes anywhere
            r = run_cli("collector", "--data", str(data), "--listen", "127.0.0.1:0")
            assert r.returncode == 2, r.stderr
            assert "not writable" in r.stderr and "Traceback" not in r.stderr
    finally:
        ro.chmod(0o700)


def test_port_in_use_is_a_clear_error(tmp_path, child_factory):
    first = child_factory(tmp_path / "a")
    r = run_cli("collector", "--data", str(tmp_path / "b"), "--listen", f"127.0.0.1:{first.port}")
    assert r.returncode == 1 and "cannot listen" in r.stderr and "Traceback" not in r.stderr


def test_report_without_data_exits_2(tmp_path):
    r = run_cli("collector", "report", "--data", str(tmp_path / "nothing"))
    assert r.returncode == 2 and "no collector data" in r.stderr
    assert not (tmp_path / "nothing").exists()


def test_enroll_bad_device_id_exits_2(tmp_path):
    r = run_cli("collector", "enroll", "../etc", "--data", str(tmp_path))
    assert r.returncode == 2 and "device id" in r.stderr


def test_enroll_serve_upload_report_and_request_log(tmp_path, child_factory):
    data = tmp_path / "data"
    token = enroll(data)
    plain = run_cli("collector", "enroll", "sim-0002", "--data", str(data))
    assert plain.returncode == 0 and plain.stdout.strip().startswith("wc_")
    child = child_factory(data)
    client = TusClient(child.url, token)
    for seq in (0, 2):
        client.upload(DEV, seq, os.urandom(5000))
    client.close()
    r = run_cli("collector", "report", "--data", str(data), "--json")
    assert r.returncode == 0, r.stderr
    rep = {d["device_id"]: d for d in json.loads(r.stdout)}
    assert rep[DEV]["missing"] == [[1, 1]] and rep[DEV]["verified"] == 2
    assert rep["sim-0002"]["received"] == 0
    table = run_cli("collector", "report", "--data", str(data), env={"COLUMNS": "160"})
    assert table.returncode == 0 and DEV in table.stdout and "missing" in table.stdout
    log = child.stop()
    assert re.search(r"INFO agent.collector: 127\.0\.0\.1 PATCH /files/\w+ 204", log), log


def test_kill9_mid_upload_resumes_from_the_acknowledged_offset(tmp_path, child_factory):
    data_dir = tmp_path / "data"
    token = enroll(data_dir)
    payload = os.urandom(400_000)
    child = child_factory(data_dir)
    client = TusClient(child.url, token)
    loc = client.create(DEV, 0, payload).headers["location"]
    path = "/files/" + loc.rsplit("/", 1)[1]
    assert client.patch(loc, 0, payload[:150_000]).status_code == 204
    # a second PATCH is half-way through its body when the server dies
    sock = raw_partial_patch(child.port, path, token, 150_000, 250_000,
                             payload[150_000:250_000])
    part = data_dir / "staging" / (path[7:] + ".part")
    wait_for(lambda: part.stat().st_size == 250_000, "unacknowledged bytes on disk")
    child.kill9()
    sock.close()
    client.close()

    child2 = child_factory(data_dir)
    client = TusClient(child2.url, token)
    loc2 = loc.replace(child.url, child2.url)
    r = client.head(loc2)
    assert r.status_code == 200 and r.headers["upload-offset"] == "150000"
    assert part.stat().st_size == 150_000  # cut back to the acknowledged offset
    lost_url = client.create(DEV, 0, payload)  # a client that lost its URL gets it back
    assert lost_url.headers["location"] == loc2
    r = client.patch(loc2, 150_000, payload[150_000:])
    assert r.status_code == 204 and r.headers["wearcap-verified"] == f"sha256={sha256(payload)}"
    assert (data_dir / "objects" / DEV / f"{DEV}-00000000.mcap").read_bytes() == payload
    client.close()


def test_restart_after_verify_keeps_dedup(tmp_path, child_factory):
    data_dir = tmp_path / "data"
    token = enroll(data_dir)
    payload = os.urandom(10_000)
    child = child_factory(data_dir)
    client = TusClient(child.url, token)
    loc = client.upload(DEV, 3, payload)
    client.close()
    child.kill9()
    child2 = child_factory(data_dir)
    client = TusClient(child2.url, token)
    r = client.create(DEV, 3, payload)
    assert r.status_code == 201
    assert r.headers["location"].rsplit("/", 1)[1] == loc.rsplit("/", 1)[1]
    assert r.headers["wearcap-verified"] == f"sha256={sha256(payload)}"
    client.close()


def test_sigterm_with_a_stalled_patch_exits_and_keeps_received_bytes(tmp_path, child_factory):
    data_dir = tmp_path / "data"
    token = enroll(data_dir)
    payload = os.urandom(100_000)
    child = child_factory(data_dir)
    client = TusClient(child.url, token)
    loc = client.create(DEV, 0, payload).headers["location"]
    path = "/files/" + loc.rsplit("/", 1)[1]
    sock = raw_partial_patch(child.port, path, token, 0, len(payload), payload[:30_000])
    part = data_dir / "staging" / (path[7:] + ".part")
    wait_for(lambda: part.stat().st_size == 30_000, "stalled bytes on disk")
    child.proc.send_signal(signal.SIGTERM)
    # a stalled client cannot hold the server up forever; uvicorn re-raises the SIGTERM it
    # handled once it has shut down, which systemd counts as a clean stop
    assert child.proc.wait(60) in (0, -signal.SIGTERM)
    sock.close()
    client.close()
    child2 = child_factory(data_dir)
    client = TusClient(child2.url, token)
    loc2 = loc.replace(child.url, child2.url)
    assert client.head(loc2).headers["upload-offset"] == "30000"
    assert client.patch(loc2, 30_000, payload[30_000:]).status_code == 204
    client.close()


def test_s3_flags_on_the_command_line(tmp_path, child_factory, monkeypatch):
    from moto.server import ThreadedMotoServer

    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
             "AWS_DEFAULT_REGION": "us-east-1"}
    for k, v in creds.items():
        monkeypatch.setenv(k, v)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    try:
        endpoint = "http://{}:{}".format(*moto.get_host_and_port())
        data_dir = tmp_path / "data"
        token = enroll(data_dir)
        missing = run_cli("collector", "--data", str(data_dir), "--listen", "127.0.0.1:0",
                          "--s3-endpoint", endpoint, "--s3-bucket", "absent")
        assert missing.returncode == 1 and "absent" in missing.stderr
        child = child_factory(data_dir, "--s3-endpoint", endpoint, "--s3-bucket", "segs",
                              "--s3-create-bucket")
        client = TusClient(child.url, token)
        payload = os.urandom(50_000)
        client.upload(DEV, 0, payload)
        client.close()
        import boto3
        s3 = boto3.client("s3", endpoint_url=endpoint)
        body = s3.get_object(Bucket="segs", Key=f"{DEV}/{DEV}-00000000.mcap")["Body"].read()
        assert body == payload
        child.stop()
    finally:
        moto.stop()
