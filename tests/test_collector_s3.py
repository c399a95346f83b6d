"""The S3-compatible backend against a standalone S3-protocol server (moto's server mode) on
127.0.0.1: staging on local disk, verified segments streamed to the bucket."""

from __future__ import annotations

import hashlib
import os

import pytest
from test_collector_support import ServerThread, sha256

DEV = "sim-0001"
BUCKET = "wearcap-test"


@pytest.fixture
def s3_endpoint(monkeypatch):
    from moto.server import ThreadedMotoServer

    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_srv(tmp_path, s3_endpoint):
    from agent.collector.s3 import S3Backend

    backend = S3Backend(BUCKET, endpoint_url=s3_endpoint, prefix="fleet-a")
    backend.check(create=True)
    srv = ServerThread(tmp_path / "data", backend=backend).start()
    yield srv, backend
    srv.stop()


def keys(backend) -> dict[str, int]:
    listing = backend.client.list_objects_v2(Bucket=BUCKET)
    return {o["Key"]: o["Size"] for o in listing.get("Contents", [])}


def test_s3_round_trip_dedup_and_termination(s3_srv):
    srv, backend = s3_srv
    dev = srv.client(srv.enroll(DEV))
    small = os.urandom(200_000)
    big = os.urandom(9 * 1024 * 1024 + 123)  # above the multipart threshold
    loc_small = dev.upload(DEV, 0, small)
    loc_big = dev.upload(DEV, 1, big, chunk=4 * 1024 * 1024)
    assert keys(backend) == {f"fleet-a/{DEV}/{DEV}-00000000.mcap": len(small),
                             f"fleet-a/{DEV}/{DEV}-00000001.mcap": len(big)}
    obj = backend.client.get_object(Bucket=BUCKET, Key=f"fleet-a/{DEV}/{DEV}-00000001.mcap")
    assert hashlib.sha256(obj["Body"].read()).hexdigest() == sha256(big)
    assert obj["Metadata"]["sha256"] == sha256(big)
    # nothing left on local disk: no staging, no local objects
    assert list((srv.data / "staging").iterdir()) == []
    assert not any(p.is_file() for p in (srv.data / "objects").rglob("*"))
    # HEAD, dedup and GET behave as with the local backend
    r = dev.head(loc_big)
    assert r.headers["wearcap-verified"] == f"sha256={sha256(big)}"
    again = dev.create(DEV, 1, big)
    assert again.status_code == 201 and again.headers["location"] == loc_big
    assert len(keys(backend)) == 2
    assert dev.get(loc_small).content == small
    assert dev.delete(loc_small).status_code == 204
    assert list(keys(backend)) == [f"fleet-a/{DEV}/{DEV}-00000001.mcap"]
    dev.close()


def test_s3_unreachable_bucket_is_a_clear_error(s3_endpoint):
    from agent.collector.s3 import S3Backend
    from agent.errors import CollectorError

    with pytest.raises(CollectorError, match="no-such-bucket"):
        S3Backend("no-such-bucket", endpoint_url=s3_endpoint).check()
    with pytest.raises(CollectorError, match="not reachable"):
        S3Backend(BUCKET, endpoint_url="http://127.0.0.1:9").check()
