"""S3-compatible object-store backend (AWS S3, MinIO, Ceph RGW, anything speaking the S3 API).

Uploads are staged on local disk exactly as with the local backend; once an upload's SHA-256
is verified, the staged file is streamed to the bucket (multipart above 8 MiB, bounded
memory), its size is checked with a HEAD on the object, and only then is the upload marked
verified and the staging file removed. Keys are ``<prefix><device>/<device>-<seq:08d>.mcap``
and carry the SHA-256 as object metadata. Credentials come from boto3's usual chain
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, profiles, instance roles).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.collector.objects import CHUNK
from agent.collector.store import Upload
from agent.errors import CollectorError

MULTIPART = 8 * 1024 * 1024


class S3Backend:
    name = "s3"

    def __init__(self, bucket: str, *, endpoint_url: str | None = None,
                 region: str = "us-east-1", prefix: str = "", client: Any = None) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = client or boto3.client(
            "s3", endpoint_url=endpoint_url or None, region_name=region,
            config=Config(connect_timeout=10, read_timeout=60,
                          retries={"max_attempts": 5, "mode": "standard"},
                          # a self-hosted endpoint (SeaweedFS, MinIO, an address) has no
                          # per-bucket DNS names
                          s3={"addressing_style": "path" if endpoint_url else "auto"}))
        self.transfer = TransferConfig(multipart_threshold=MULTIPART,
                                       multipart_chunksize=MULTIPART, max_concurrency=2)

    def _fail(self, what: str, exc: Exception) -> CollectorError:
        return CollectorError(f"s3://{self.bucket} ({self.endpoint_url or 'AWS'}): {what}: {exc}")

    def check(self, create: bool = False) -> None:
        """Fail early and clearly when the bucket cannot be reached (or create it)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if create and code in ("404", "NoSuchBucket", "NotFound"):
                try:
                    self.client.create_bucket(Bucket=self.bucket)
                    return
                except (BotoCoreError, ClientError) as exc2:
                    raise self._fail("cannot create bucket", exc2) from exc2
            raise self._fail("bucket not reachable", exc) from exc
        except BotoCoreError as exc:
            raise self._fail("endpoint not reachable", exc) from exc

    def store(self, upload: Upload, staged: Path) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        key = self.prefix + upload.object_name()
        try:
            with open(staged, "rb") as f:
                self.client.upload_fileobj(
                    f, self.bucket, key, Config=self.transfer,
                    ExtraArgs={"Metadata": {"sha256": upload.sha256,
                                            "segment-id": upload.segment_id}})
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except (BotoCoreError, ClientError, OSError) as exc:
            raise self._fail(f"storing {key}", exc) from exc
        if int(head.get("ContentLength", -1)) != upload.length:
            raise CollectorError(f"s3://{self.bucket}/{key}: stored size "
                                 f"{head.get('ContentLength')} != {upload.length}")
        stored = self.sha256(key)  # verify what the store holds, not what we sent
        if stored != upload.sha256:
            self.delete(key)
            raise CollectorError(f"s3://{self.bucket}/{key}: the store holds sha256 {stored}, "
                                 f"not {upload.sha256}")
        return key

    def put_file(self, key: str, path: Path) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        full = self.prefix + key
        try:
            with open(path, "rb") as f:
                self.client.upload_fileobj(f, self.bucket, full, Config=self.transfer)
        except (BotoCoreError, ClientError, OSError) as exc:
            raise self._fail(f"storing {full}", exc) from exc
        path.unlink(missing_ok=True)
        return full

    def key_for(self, upload: Upload) -> str:
        return self.prefix + upload.object_name()

    def sha256(self, key: str) -> str:
        """SHA-256 of what the store holds under ``key``, read back in full."""
        import hashlib

        h = hashlib.sha256()
        for block in self.read(key):
            h.update(block)
        return h.hexdigest()

    def read(self, key: str) -> Iterator[bytes]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(f"reading {key}", exc) from exc
        try:
            yield from body.iter_chunks(CHUNK)
        finally:
            body.close()

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(f"deleting {key}", exc) from exc

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix} at {self.endpoint_url or 'AWS'}"
