"""Memory does not grow with file size: tracemalloc peak over a 64 MB vs a 256 MB upload.

Sparse files keep the disk out of it; the server is a hash-and-discard tus server in a child
process (so its allocations are not traced)."""

from __future__ import annotations

import gc
import tracemalloc

from sync_servers import DEVICE, make_segments, tus_sink, write_config

from agent import config
from agent.sync.service import SyncService

MB = 1024 * 1024


def peak_for(tmp_path, url, size):
    spool = tmp_path / f"spool{size}"
    make_segments(spool, DEVICE, 1, size, sparse=True)
    cfg = config.load(write_config(tmp_path / f"c{size}.toml", url=url, spool=spool,
                                   token_file=tmp_path / "token", chunk_bytes=4 * MB))
    gc.collect()
    tracemalloc.start()
    try:
        summary = SyncService(cfg, spool=spool, token="t", once=True).run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary.ok, summary.to_dict()
    assert summary.bytes_sent == size
    return peak


def test_peak_memory_is_flat_in_file_size(tmp_path):
    with tus_sink(tmp_path) as sink:
        peak_for(tmp_path, sink.url, 1 * MB)  # warm up: imports and first-use caches
        small = peak_for(tmp_path, sink.url, 64 * MB)
        large = peak_for(tmp_path, sink.url, 256 * MB)
    print(f"tracemalloc peak: 64 MB file {small / 1024:.0f} KiB, "
          f"256 MB file {large / 1024:.0f} KiB")
    # 4x the bytes; the peak may wobble by allocator noise, never by the file size
    assert large < small * 1.25 + 256 * 1024
    assert large < 4 * MB  # well under one chunk: nothing holds a chunk in memory
