"""The collector's upload logic, free of HTTP: create (with dedup), patch, verify, terminate,
expire. Methods block on disk and SQLite; the HTTP layer calls them from worker threads.

Every method that takes an upload id checks the asking device first; another device's upload
is answered exactly like an unknown one (404), so ids of other namespaces leak nothing.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from io import FileIO
from pathlib import Path

from agent.collector.auth import Principal
from agent.collector.discard import Derived
from agent.collector.objects import Backend, LocalBackend, Staging
from agent.collector.s3staging import S3PatchWriter, S3Staging, Staged
from agent.collector.store import Store, Upload, open_store
from agent.collector.tus import CHECKSUM_MISMATCH, Checksum, SegmentMeta, TusError, next_state
from agent.errors import CollectorError, InputError

log = logging.getLogger("agent.collector")

DEFAULT_MAX_SIZE = 4 * 1024**3
DEFAULT_EXPIRE_SECONDS = 7 * 24 * 3600.0
DEFAULT_EXPORT_RETENTION = 7 * 24 * 3600.0
"""Cached exports are remade on request, so they are kept a week by default; verified
segments are kept for ever unless the collector is told otherwise (--retention-days)."""


def open_data_dir(data: Path) -> Path:
    """Create ``data`` if needed and prove it is writable, else a clear InputError (exit 2)."""
    try:
        data.mkdir(parents=True, exist_ok=True)
        probe = data / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"data directory is not writable: {exc.strerror or exc}",
                         path=str(data)) from exc
    return data


class Collector:
    def __init__(self, data: Path, *, backend: Backend | None = None,
                 store: Store | None = None,
                 max_size: int = DEFAULT_MAX_SIZE,
                 expire_seconds: float = DEFAULT_EXPIRE_SECONDS,
                 clock: Callable[[], float] = time.time,
                 shared_staging: S3Staging | None = None,
                 retention_seconds: float = 0.0,
                 export_retention_seconds: float = DEFAULT_EXPORT_RETENTION) -> None:
        """``shared_staging``: unfinished uploads live in the object store, so any node
        sharing the store and the bucket continues any upload (``s3staging.py``).
        ``retention_seconds``: how long a verified segment is kept (0: forever);
        ``export_retention_seconds``: how long a cached export is kept (0: forever)."""
        open_data_dir(data)
        self.data = data
        self.shared = shared_staging
        self.store: Store = store or open_store(data)
        self.staging = Staging(data / "staging")
        self.backend: Backend = backend or LocalBackend(data / "objects")
        self.max_size = max_size
        self.expire_seconds = expire_seconds
        self.clock = clock
        self.retention_seconds = retention_seconds
        self.export_retention_seconds = export_retention_seconds
        self.local = LocalBackend(data / "objects")
        from agent.collector import exports

        self.derived: list[Derived] = [lambda d, q: exports.purge_derived(self, d, q)]
        """Hooks that purge what is derived from a segment (exports), see discard.py."""
        fixed = 0
        if self.shared is None:  # local staging: this node's disk must agree with the store
            self._recover_moved()
            fixed = self.reconcile()
        if fixed:
            log.info("reconciled %d unfinished uploads with their staged bytes", fixed)

    def close(self) -> None:
        self.store.close()

    def reconcile(self) -> int:
        """After a restart: make every staging file agree with its committed offset."""
        fixed = 0
        for up in self.store.unfinished():
            size = self.staging.size(up.id)
            if size == up.offset:
                continue
            fixed += 1
            if size > up.offset:  # bytes of a PATCH that was never acknowledged
                self.staging.truncate(up.id, up.offset)
            else:  # the disk lost acknowledged bytes: ask the client for them again
                state = "open" if size < up.length else up.state
                self.store.set_offset(up.id, size, state, up.expires)
        return fixed

    def _recover_moved(self) -> None:
        """A crash between moving a verified file into objects/ and recording it: move it
        back to staging so the next HEAD/PATCH hashes and records it again."""
        for up in self.store.unfinished():
            moved = self.local.root / up.object_name()
            if up.state == "complete" and not self.staging.path(up.id).exists() \
                    and moved.is_file():
                os.replace(moved, self.staging.path(up.id))
                log.info("recovered %s after a crash during verification", up.segment_id)

    # --- lookup ----------------------------------------------------------------------------
    def lookup(self, who: Principal, upload_id: str) -> Upload:
        up = self.store.upload(upload_id) if len(upload_id) == 32 else None
        if up is None or (not who.is_admin and up.device != who.device):
            raise TusError(404, "no such upload")
        if up.state == "expired":
            raise TusError(410, "upload expired")
        if up.state == "open" and up.expires is not None and self.clock() > up.expires:
            self._expire(up)
            raise TusError(410, "upload expired")
        return up

    def _expire(self, up: Upload) -> None:
        next_state(up.state, "expire")
        self.store.set_state(up.id, "expired")
        self._drop_staged(up)
        log.info("expired upload %s (%s)", up.id, up.segment_id)

    def _drop_staged(self, up: Upload) -> None:
        if self.shared is not None:
            self.shared.discard(up, Staged.from_json(up.staging))
        else:
            self.staging.remove(up.id)

    def sweep_expired(self) -> int:
        now = self.clock()
        n = 0
        for up in self.store.unfinished():
            if up.state == "open" and up.expires is not None and now > up.expires:
                self._expire(up)
                n += 1
        return n

    def sweep_retention(self) -> tuple[int, int]:
        """Purge verified segments older than the retention (through the discard path: a
        ``retention`` tombstone each) and cached exports older than theirs; returns
        (segments, exports) purged."""
        from agent.collector import discard, exports

        now = self.clock()
        segs = n_exp = 0
        if self.retention_seconds > 0:
            while True:
                old = self.store.verified_before(now - self.retention_seconds, 200)
                for up in old:
                    discard.purge(self, up.device, up.seq, up.segment_id, reason="retention",
                                  now=now)
                segs += len(old)
                if len(old) < 200:
                    break
        if self.export_retention_seconds > 0:
            for e in self.store.exports_before(now - self.export_retention_seconds):
                exports.drop(self, e)
                n_exp += 1
        if segs or n_exp:
            log.warning("retention: purged %d verified segment(s) older than %.1f days and "
                        "%d cached export(s)", segs, self.retention_seconds / 86400, n_exp)
        return segs, n_exp

    # --- creation --------------------------------------------------------------------------
    def create(self, who: Principal, length: int, meta: SegmentMeta) -> tuple[Upload, bool]:
        """A new upload, or the existing one for the same (device, segment, sha256)."""
        if who.device is None:
            raise TusError(403, "only device tokens may upload")
        self.refuse_tombstoned(who.device, meta.seq)
        for _ in range(3):  # a concurrent create (another thread or node) may win the insert
            old = self.store.find_segment(who.device, meta.segment_id)
            if old is not None and old.state == "open" and old.expires is not None \
                    and self.clock() > old.expires:
                self._expire(old)
                old = None
            if old is not None:
                if old.sha256 != meta.sha256:
                    raise TusError(409, f"segment {meta.segment_id} is already held with a "
                                        f"different sha256; a device cannot overwrite")
                if old.length != length:
                    raise TusError(409, f"segment {meta.segment_id} is already held with "
                                        f"Upload-Length {old.length}")
                return old, False
            now = self.clock()
            up = Upload(secrets.token_hex(16), who.device, meta.segment_id, meta.seq,
                        meta.sha256, length, 0, "open", now, now + self.expire_seconds, "", "")
            if self.shared is None:
                self.staging.create(up.id)
            if self.store.insert_upload(up, meta.to_json()):
                log.info("created upload %s for %s (%d bytes)", up.id, up.segment_id, length)
                return up, True
            self.staging.remove(up.id)
        raise TusError(503, f"segment {meta.segment_id} is being created concurrently; retry")

    def refuse_tombstoned(self, device: str, seq: int) -> None:
        """A sequence number that was discarded or expired is never accepted again."""
        t = self.store.tombstone(device, seq)
        if t is not None:
            raise TusError(410, f"sequence number {seq} of {device} was removed ({t.reason}); "
                                f"it is never accepted again")

    # --- patch -----------------------------------------------------------------------------
    def open_patch(self, up: Upload, checksum: Checksum | None) -> PatchWriter | S3PatchWriter:
        if up.state != "open":
            raise TusError(409, f"upload is {up.state}", {"Upload-Offset": str(up.offset)})
        if self.shared is not None:
            return S3PatchWriter(self, up, checksum, self.shared)
        return PatchWriter(self, up, checksum)

    def committed(self, up: Upload, new_offset: int, staging: str | None = None) -> Upload:
        """Record ``new_offset`` (its bytes are already durable)."""
        state = next_state(up.state, "last_patch" if new_offset == up.length else "patch")
        expires = self.clock() + self.expire_seconds
        if not self.store.set_offset(up.id, new_offset, state, expires, expect=up.offset,
                                     staging=staging):
            raise TusError(409, "another request advanced this upload meanwhile")
        return replace(up, offset=new_offset, state=state, expires=expires)

    # --- verification ----------------------------------------------------------------------
    def finalize(self, up: Upload) -> Upload:
        """Hash a complete upload; verified -> into the backend, mismatch -> discarded + 460."""
        if up.state != "complete":
            return up
        if self.store.tombstone(up.device, up.seq) is not None:
            # discarded while its last bytes were on their way (or created in the same
            # moment as the discard): purge it rather than verify it
            from agent.collector.discard import purge

            t = self.store.tombstone(up.device, up.seq)
            assert t is not None
            purge(self, up.device, up.seq, up.segment_id, reason=t.reason, request=t.request)
            self.refuse_tombstoned(up.device, up.seq)
        if self.shared is not None:
            return self._finalize_shared(up)
        digest = self.staging.sha256(up.id)
        if digest != up.sha256:
            next_state(up.state, "hash_mismatch")
            self.store.delete_upload(up.id)
            self.staging.remove(up.id)
            log.warning("upload %s (%s) discarded: sha256 %s, metadata says %s",
                        up.id, up.segment_id, digest, up.sha256)
            raise TusError(CHECKSUM_MISMATCH,
                           f"whole-file SHA-256 mismatch for {up.segment_id}: received bytes "
                           f"hash to {digest}, metadata says {up.sha256}; the upload was "
                           f"discarded, start this segment over")
        next_state(up.state, "hash_match")
        try:
            key = self.backend.store(up, self.staging.path(up.id))
        except CollectorError as exc:
            raise TusError(503, f"verified, but storing failed: {exc}; retry") from exc
        now = self.clock()
        self.store.set_verified(up.id, self.backend.name, key, now)
        self.staging.remove(up.id)
        log.info("verified upload %s (%s) sha256=%s in %s", up.id, up.segment_id, digest,
                 self.backend.name)
        return replace(up, state="verified", expires=None, backend=self.backend.name,
                       object_key=key)

    def _finalize_shared(self, up: Upload) -> Upload:
        """Complete the multipart upload, read the object back and hash it."""
        assert self.shared is not None
        staged = Staged.from_json(up.staging)
        try:
            digest = self.shared.complete(up, staged)
        except CollectorError as exc:
            raise TusError(503, f"complete, but assembling it failed: {exc}; retry") from exc
        key = self.shared.key(up)
        if digest != up.sha256:
            next_state(up.state, "hash_mismatch")
            self.shared.backend.delete(key)
            self.store.delete_upload(up.id)
            log.warning("upload %s (%s) discarded: the store holds sha256 %s, metadata says "
                        "%s", up.id, up.segment_id, digest, up.sha256)
            raise TusError(CHECKSUM_MISMATCH,
                           f"whole-file SHA-256 mismatch for {up.segment_id}: the stored "
                           f"object hashes to {digest}, metadata says {up.sha256}; the upload "
                           f"was discarded, start this segment over")
        next_state(up.state, "hash_match")
        self.store.set_verified(up.id, self.backend.name, key, self.clock())
        log.info("verified upload %s (%s) sha256=%s, read back from %s", up.id, up.segment_id,
                 digest, self.backend.name)
        return replace(up, state="verified", expires=None, backend=self.backend.name,
                       object_key=key)

    # --- termination and reading -----------------------------------------------------------
    def terminate(self, up: Upload) -> None:
        next_state(up.state, "terminate")
        if up.state == "verified":
            self._backend_for(up).delete(up.object_key)
        self.store.delete_upload(up.id)
        if up.state != "verified":
            self._drop_staged(up)
        log.info("terminated upload %s (%s)", up.id, up.segment_id)

    def read(self, up: Upload) -> Iterator[bytes]:
        if up.state != "verified":
            raise TusError(404, "upload is not complete and verified")
        return self._backend_for(up).read(up.object_key)

    def delete_everywhere(self, up: Upload) -> None:
        """Delete the object under ``up``'s name in every configured backend (and the
        local directory), whatever the store says: a crash between storing and recording
        can leave one behind."""
        self.local.delete(up.object_name())
        if self.backend is not self.local and self.backend.name != "local":
            key_for = getattr(self.backend, "key_for", None)
            self.backend.delete(key_for(up) if key_for else up.object_name())

    def _backend_for(self, up: Upload) -> Backend:
        if up.backend == self.backend.name:
            return self.backend
        if up.backend == "local":
            return self.local
        raise TusError(503, f"upload is stored in the {up.backend} backend, not configured")


class PatchWriter:
    """Streams one PATCH body into the staging file at the committed offset.

    Bytes go straight to the staging file (bounded memory); :meth:`finish` checks the chunk's
    checksum and fsyncs before the new offset is committed. A rejected chunk is cut off again,
    so the committed prefix never changes. A body cut short keeps what arrived, unless it
    carried a checksum (then nothing of it can be trusted).
    """

    def __init__(self, collector: Collector, up: Upload, checksum: Checksum | None) -> None:
        self.c = collector
        self.up = up
        self.checksum = checksum
        self.hasher = checksum.hasher() if checksum else None
        self.written = 0
        self.limit = up.length - up.offset
        # unbuffered: each received piece is one write(2), no second copy in user space
        self.f: FileIO = open(collector.staging.path(up.id), "r+b", buffering=0)  # noqa: SIM115
        self.f.seek(up.offset)
        self.f.truncate(up.offset)

    def write(self, data: bytes) -> None:
        if self.written + len(data) > self.limit:
            raise TusError(413, f"body runs past Upload-Length {self.up.length}")
        view = memoryview(data)
        while view:
            view = view[self.f.write(view) or 0:]
        if self.hasher is not None:
            self.hasher.update(data)
        self.written += len(data)

    def _discard(self) -> None:
        self.f.truncate(self.up.offset)
        self.f.close()

    def finish(self) -> Upload:
        """The body ended: check the chunk, make it durable, commit the new offset."""
        if self.checksum is not None and self.hasher is not None \
                and self.hasher.digest() != self.checksum.digest:
            self._discard()
            raise TusError(CHECKSUM_MISMATCH,
                           f"{self.checksum.algorithm} checksum mismatch; chunk discarded",
                           {"Upload-Offset": str(self.up.offset)})
        return self._commit()

    def _commit(self) -> Upload:
        os.fsync(self.f.fileno())
        self.f.close()
        if self.written == 0:
            return self.up
        return self.c.committed(self.up, self.up.offset + self.written)

    def abort(self, keep: bool) -> Upload:
        """The body was cut (or refused): keep the received bytes if allowed, else drop them."""
        if keep and self.checksum is None:
            return self._commit()
        self._discard()
        return self.up
