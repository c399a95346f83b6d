"""Unfinished uploads staged in the object store, so that any collector node can continue one.

An upload is an S3 multipart upload to its final key, plus a *tail*: the committed bytes not
yet in a part, as a small object of their own. S3 requires every part but the last to be at
least 5 MiB, while a device PATCHes 4 MiB at a time; so PATCH bodies are aggregated, and a
part is cut only once ``part_bytes`` (>= 5 MiB) have gathered. The store row records the
multipart id, the parts (number, ETag, size) and the tail's key with the offset, in the same
compare-and-set that commits the offset:

    PATCH body -> node-local scratch file (bounded memory; lost with the node, never acked)
               -> old tail + body cut into parts of part_bytes, the rest a new tail object
               -> store: offset, parts, tail (CAS on the old offset) -> 204 to the device
               -> the old tail object is deleted

A node killed at any point leaves the row as it was: the next PATCH (on any node) starts from
the committed offset, overwriting part numbers that were never committed; orphan tail objects,
multipart uploads begun but never committed and the scratch files of PATCHes a node was
receiving when it died are swept (at completion; at the node's start). One node writes an
upload at a time: it holds a lease in the store. On the last byte the multipart upload is
completed and the object is read back and hashed before ``Wearcap-Verified`` is sent.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.collector.store import Upload
from agent.errors import CollectorError

if TYPE_CHECKING:
    from agent.collector.s3 import S3Backend

PART_MIN = 5 * 1024 * 1024
"""S3's minimum size of every part but the last."""
READ_BLOCK = 1024 * 1024
LEASE_SECONDS = 6.0
"""How long a node's claim on an upload lasts unless renewed (every LEASE_RENEW seconds while
its PATCH body streams): a killed node blocks the upload for at most this long."""
LEASE_RENEW = 2.0


@dataclass(frozen=True)
class Staged:
    mp: str = ""
    parts: tuple[tuple[int, str, int], ...] = ()
    tail: str = ""
    tail_size: int = 0

    @property
    def parts_bytes(self) -> int:
        return sum(p[2] for p in self.parts)

    def to_json(self) -> str:
        return json.dumps({"mp": self.mp, "parts": [list(p) for p in self.parts],
                           "tail": self.tail, "tail_size": self.tail_size})

    @classmethod
    def from_json(cls, text: str) -> Staged:
        if not text:
            return cls()
        d = json.loads(text)
        return cls(d["mp"], tuple((int(n), str(e), int(s)) for n, e, s in d["parts"]),
                   d["tail"], int(d["tail_size"]))


@dataclass
class PartLog:
    """Every part size sent (tests assert the 5 MiB minimum on them)."""

    sizes: list[tuple[str, int, int, bool]] = field(default_factory=list)
    """(upload id, part number, size, last)."""


class S3Staging:
    def __init__(self, backend: S3Backend, scratch: Path, *, part_bytes: int = PART_MIN,
                 node: str | None = None) -> None:
        if part_bytes < PART_MIN:
            raise ValueError(f"part_bytes must be at least {PART_MIN} (S3's minimum)")
        self.backend = backend
        self.client: Any = backend.client
        self.bucket = backend.bucket
        self.scratch = scratch
        scratch.mkdir(parents=True, exist_ok=True)
        # bodies of PATCHes this node was receiving when it died: never acknowledged, never
        # committed; the scratch directory is this node's own (under its --data)
        for stale in scratch.glob("*.patch"):
            stale.unlink(missing_ok=True)
        self.part_bytes = part_bytes
        self.node = node or f"{socket.gethostname()}:{os.getpid()}"
        self.log = PartLog()

    def describe(self) -> str:
        return f"unfinished uploads staged in {self.backend.describe()} (parts of " \
               f"{self.part_bytes >> 20} MiB)"

    def _fail(self, what: str, exc: Exception) -> CollectorError:
        return CollectorError(f"s3://{self.bucket}: {what}: {exc}")

    def key(self, up: Upload) -> str:
        return self.backend.key_for(up)

    def _tail_prefix(self, up: Upload) -> str:
        return f"{self.backend.prefix}.staging/{up.id}/"

    # --- appending -------------------------------------------------------------------------
    def _blocks(self, staged: Staged, src: Path, n: int) -> Iterator[bytes]:
        if staged.tail_size:
            yield from self.backend.read(staged.tail)
        with open(src, "rb") as f:
            left = n
            while left > 0:
                block = f.read(min(READ_BLOCK, left))
                if not block:
                    raise CollectorError("scratch file shorter than the bytes received")
                left -= len(block)
                yield block

    def append(self, up: Upload, staged: Staged, src: Path, n: int) -> Staged:
        """``n`` new bytes (in ``src``) after the committed ones: returns the new staging,
        nothing of which is committed yet. The last byte of the upload closes the parts."""
        from botocore.exceptions import BotoCoreError, ClientError

        key = self.key(up)
        new_offset = up.offset + n
        last = new_offset == up.length
        parts = list(staged.parts)
        mp = staged.mp
        buf = bytearray()
        try:
            def send(data: bytes | bytearray, final: bool) -> None:
                nonlocal mp
                if not mp:
                    mp = self.client.create_multipart_upload(
                        Bucket=self.bucket, Key=key,
                        Metadata={"sha256": up.sha256, "segment-id": up.segment_id})["UploadId"]
                number = len(parts) + 1
                r = self.client.upload_part(Bucket=self.bucket, Key=key, UploadId=mp,
                                            PartNumber=number, Body=bytes(data))
                parts.append((number, str(r["ETag"]), len(data)))
                self.log.sizes.append((up.id, number, len(data), final))

            for block in self._blocks(staged, src, n):
                buf += block
                while len(buf) >= self.part_bytes:
                    send(buf[:self.part_bytes], False)
                    del buf[:self.part_bytes]
            if last:
                if buf or not parts:
                    send(buf, True)
                return Staged(mp, tuple(parts), "", 0)
            tail = ""
            if buf:
                tail = f"{self._tail_prefix(up)}{new_offset}"
                self.client.put_object(Bucket=self.bucket, Key=tail, Body=bytes(buf))
            return Staged(mp, tuple(parts), tail, len(buf))
        except (BotoCoreError, ClientError, OSError) as exc:
            raise self._fail(f"staging {up.segment_id}", exc) from exc

    def forget_tail(self, old: Staged, new: Staged) -> None:
        """After the commit: the superseded tail object goes."""
        if old.tail and old.tail != new.tail:
            self._delete(old.tail)

    def forget_uncommitted(self, up: Upload, old: Staged, new: Staged) -> None:
        """The commit failed: what this PATCH created (its tail object, a multipart upload
        it started) belongs to no row; remove it, or it would outlive a discard."""
        from botocore.exceptions import BotoCoreError, ClientError

        if new.tail and new.tail != old.tail:
            self._delete(new.tail)
        if new.mp and new.mp != old.mp:
            with contextlib.suppress(BotoCoreError, ClientError):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key(up),
                                                   UploadId=new.mp)

    def _delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        with contextlib.suppress(BotoCoreError, ClientError):  # else swept with the prefix
            self.client.delete_object(Bucket=self.bucket, Key=key)

    def _sweep_tails(self, up: Upload) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            listing = self.client.list_objects_v2(Bucket=self.bucket,
                                                  Prefix=self._tail_prefix(up))
            for obj in listing.get("Contents", []):
                self._delete(obj["Key"])
        except (BotoCoreError, ClientError):
            pass

    def _abort_strays(self, up: Upload, keep: str) -> None:
        """Multipart uploads of this key other than ``keep``: begun by a node that died before
        it committed its first part (the next writer began another). Their parts are never
        part of the object, and S3 keeps them, billed, until aborted."""
        from botocore.exceptions import BotoCoreError, ClientError

        key = self.key(up)
        try:
            listing = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
            for mp in listing.get("Uploads", []):
                if mp["Key"] == key and mp["UploadId"] != keep:
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=key,
                                                       UploadId=mp["UploadId"])
        except (BotoCoreError, ClientError):
            pass

    # --- completing ------------------------------------------------------------------------
    def complete(self, up: Upload, staged: Staged) -> str:
        """Assemble the parts into the final object; returns its SHA-256 as read back."""
        from botocore.exceptions import BotoCoreError, ClientError

        key = self.key(up)
        try:
            if staged.mp:
                try:
                    self.client.complete_multipart_upload(
                        Bucket=self.bucket, Key=key, UploadId=staged.mp,
                        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e}
                                                   for n, e, _ in staged.parts]})
                except ClientError as exc:
                    # completed by a node that died before recording it: the object is there
                    if str(exc.response.get("Error", {}).get("Code")) != "NoSuchUpload":
                        raise
            else:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=b"")
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(f"completing {up.segment_id}", exc) from exc
        self._sweep_tails(up)
        self._abort_strays(up, keep="")
        return self.backend.sha256(key)

    def discard(self, up: Upload, staged: Staged) -> None:
        """Drop everything staged for ``up`` (expired, terminated, or hash mismatch)."""
        from botocore.exceptions import BotoCoreError, ClientError

        if staged.mp:
            with contextlib.suppress(BotoCoreError, ClientError):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key(up),
                                                   UploadId=staged.mp)
        self._sweep_tails(up)
        self._abort_strays(up, keep="")

    def scratch_file(self) -> tuple[int, Path]:
        fd, name = tempfile.mkstemp(dir=self.scratch, suffix=".patch")
        return fd, Path(name)


class S3PatchWriter:
    """One PATCH body into object-store staging; the same face as the local PatchWriter."""

    def __init__(self, collector: Any, up: Upload, checksum: Any, staging: S3Staging) -> None:
        self.c = collector
        self.up = up
        self.staging = staging
        self.staged = Staged.from_json(up.staging)
        if self.staged.parts_bytes + self.staged.tail_size != up.offset:
            raise CollectorError(f"upload {up.id}: staging holds "
                                 f"{self.staged.parts_bytes + self.staged.tail_size} bytes, "
                                 f"offset is {up.offset}")
        now = collector.clock()
        if not collector.store.take_lease(up.id, staging.node, now + LEASE_SECONDS, now):
            from agent.collector.tus import TusError

            raise TusError(409, "this upload is being written through another node; "
                                "retry after a HEAD", {"Upload-Offset": str(up.offset)})
        self.renewed = now
        self.checksum = checksum
        self.hasher = checksum.hasher() if checksum else None
        self.written = 0
        self.limit = up.length - up.offset
        fd, self.path = staging.scratch_file()
        self.f = os.fdopen(fd, "wb", buffering=0)

    def write(self, data: bytes) -> None:
        from agent.collector.tus import TusError

        if self.written + len(data) > self.limit:
            raise TusError(413, f"body runs past Upload-Length {self.up.length}")
        self.f.write(data)
        now = self.c.clock()
        if now - self.renewed >= LEASE_RENEW:
            self.renewed = now
            self.c.store.take_lease(self.up.id, self.staging.node, now + LEASE_SECONDS, now)
        if self.hasher is not None:
            self.hasher.update(data)
        self.written += len(data)

    def _cleanup(self) -> None:
        if not self.f.closed:
            self.f.close()
        self.path.unlink(missing_ok=True)
        self.c.store.release_lease(self.up.id, self.staging.node)

    def finish(self) -> Upload:
        from agent.collector.tus import CHECKSUM_MISMATCH, TusError

        if self.checksum is not None and self.hasher is not None \
                and self.hasher.digest() != self.checksum.digest:
            self._cleanup()
            raise TusError(CHECKSUM_MISMATCH,
                           f"{self.checksum.algorithm} checksum mismatch; chunk discarded",
                           {"Upload-Offset": str(self.up.offset)})
        return self._commit()

    def _commit(self) -> Upload:
        try:
            self.f.close()
            if self.written == 0:
                same: Upload = self.up
                return same
            new = self.staging.append(self.up, self.staged, self.path, self.written)
            try:
                up: Upload = self.c.committed(self.up, self.up.offset + self.written,
                                              staging=new.to_json())
            except BaseException:  # not committed (another node advanced it, or it was
                self.staging.forget_uncommitted(self.up, self.staged, new)  # discarded meanwhile)
                raise
            self.staging.forget_tail(self.staged, new)
            return replace(up, staging=new.to_json())
        finally:
            self._cleanup()

    def abort(self, keep: bool) -> Upload:
        if keep and self.checksum is None:
            return self._commit()
        self._cleanup()
        up: Upload = self.up
        return up
