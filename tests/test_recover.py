"""Recovery of part files: truncation at every chunk boundary and mid-chunk, corrupted bytes,
garbage. Every complete, CRC-valid chunk is kept; nothing recoverable goes to quarantine."""

from __future__ import annotations

import io
import random

import msgpack
from mcap.reader import make_reader

from agent.record.recover import recover_all, recover_part, scan
from agent.record.schemas import frame_rows
from agent.record.segment import SegmentHeader, SegmentWriter
from agent.record.spool import Spool
from agent.sources import GAP_TOPIC
from tests.h264_frames import encode_frames

FRAMES = encode_frames(60)


def crashed_part(checkpoint_every: int = 6) -> tuple[bytes, list[int]]:
    """The bytes of a segment that was never closed, and the file size after each checkpoint
    with the number of frames it held."""
    buf = io.BytesIO()
    w = SegmentWriter(buf, SegmentHeader("dev", 5, 4, "ee" * 32, "d", None),
                      chunk_bytes=1 << 20)
    marks = []
    for i, f in enumerate(FRAMES):
        w.write_frame(f)
        if i % checkpoint_every == checkpoint_every - 1:
            w.checkpoint()
            marks.append(len(buf.getvalue()))
    return buf.getvalue(), marks


def chunk_offsets(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of every chunk record, walking the record framing."""
    pos, out = 8, []
    while pos + 9 <= len(data):
        op, length = data[pos], int.from_bytes(data[pos + 1:pos + 9], "little")
        if op == 0x06:
            out.append((pos, pos + 9 + length))
        pos += 9 + length
    return out


def read_sealed(path):
    with path.open("rb") as fh:
        r = make_reader(fh, validate_crcs=True)
        md = {m.name: m.metadata for m in r.iter_metadata()}
        fh.seek(0)
        r = make_reader(fh, validate_crcs=True)
        idx, gaps = [], []
        for _, ch, m in r.iter_messages(log_time_order=False):
            if ch.topic == "/camera/frames":
                idx += [f["index"] for f in frame_rows(msgpack.unpackb(m.data))]
            elif ch.topic == GAP_TOPIC:
                gaps.append(msgpack.unpackb(m.data))
    return md, idx, gaps


def test_truncation_at_every_chunk_boundary_and_mid_chunk(tmp_path):
    data, marks = crashed_part()
    cuts = []
    for k, end in enumerate(marks):
        start = marks[k - 1] if k else 0
        cuts += [(end, 6 * (k + 1)), (end + 1, 6 * (k + 1)), ((start + end) // 2, 6 * k)]
    trials = 0
    for n, (cut, want) in enumerate(cuts):
        spool = Spool(tmp_path / f"s{n}", "dev")
        part = spool.part_path(5)
        part.write_bytes(data[:cut])
        r = recover_part(spool, part)
        trials += 1
        if want == 0:
            assert r.outcome == "quarantined", (cut, r)
            assert (spool.quarantined / part.name).exists()
            continue
        assert r.outcome == "sealed", (cut, r)
        md, idx, gaps = read_sealed(r.sealed.path)
        assert idx == list(range(want)), cut  # every complete chunk, in order, nothing else
        seg = md["wearcap.segment"]
        assert seg["recovered"] == "true" and seg["segment_id"] == "dev-00000005"
        assert seg["previous_sha256"] == "ee" * 32  # the chain survives recovery
        assert gaps and gaps[-1]["cause"].startswith("crash")
        assert not part.exists()
    print(f"truncation trials: {trials}, all recovered to the last complete chunk")


def test_corrupted_bytes_lose_only_the_damaged_chunk(tmp_path):
    data, marks = crashed_part()
    rng = random.Random(7)
    trials = lost_total = 0
    for n in range(40):
        k = rng.randrange(1, len(marks) - 1)  # damage inside chunk k (frames 6k .. 6k+5)
        lo, hi = marks[k - 1], marks[k]
        pos = rng.randrange(lo + 40, hi - 40)
        bad = bytearray(data)
        bad[pos] ^= 0xFF
        spool = Spool(tmp_path / f"c{n}", "dev")
        part = spool.part_path(5)
        part.write_bytes(bytes(bad))
        r = recover_part(spool, part)
        assert r.outcome == "sealed"
        _, idx, gaps = read_sealed(r.sealed.path)
        lost = set(range(60)) - set(idx)
        # A flipped byte hits one chunk (or its message index): at most that chunk is lost.
        assert lost <= set(range(6 * k, 6 * k + 6)), (pos, sorted(lost))
        assert idx == sorted(idx)
        if lost:
            assert any(g["cause"] == "corrupt-chunk" for g in gaps)
            assert (spool.quarantined / part.name).exists()  # original kept for analysis
        lost_total += len(lost)
        trials += 1
    print(f"corruption trials: {trials}, frames lost: {lost_total} (at most one chunk each)")


def test_garbage_and_empty_files_go_to_quarantine_not_a_crash(tmp_path):
    spool = Spool(tmp_path, "dev")
    spool.part_path(1).write_bytes(b"")
    spool.part_path(2).write_bytes(b"not an mcap file at all" * 100)
    spool.part_path(3).write_bytes(crashed_part()[0][:30])
    (spool.active / "weird.mcap.part").write_bytes(b"x")
    results = recover_all(spool)
    assert [r.outcome for r in results] == ["quarantined"] * 3
    assert sorted(p.name for p in spool.quarantined.glob("*.part")) == [
        "dev-00000001.mcap.part", "dev-00000002.mcap.part", "dev-00000003.mcap.part"]
    assert all((spool.quarantined / (p + ".why")).read_text() for p in
               ("dev-00000001.mcap.part", "dev-00000002.mcap.part"))
    assert not list(spool.parts())
    # and the sequence moves past them
    assert spool.next_seq() == 4


def test_a_part_that_was_already_sealed_is_set_aside(tmp_path):
    spool = Spool(tmp_path, "dev")
    data, _ = crashed_part()
    spool.part_path(5).write_bytes(data)
    first = recover_part(spool, spool.part_path(5))
    assert first.outcome == "sealed"
    spool.part_path(5).write_bytes(data)  # crash after sealing, before removing the part
    again = recover_part(spool, spool.part_path(5))
    assert again.outcome == "duplicate"
    assert first.sealed.path.exists()


def test_first_chunk_lost_channels_come_from_the_metadata_table(tmp_path):
    data, _ = crashed_part()
    bad = bytearray(data)
    lo, hi = chunk_offsets(data)[0]
    bad[(lo + hi) // 2] ^= 0x55  # inside the first chunk (which also registered the channels)
    s = scan(bytes(bad))
    assert s.bad
    spool = Spool(tmp_path, "dev")
    spool.part_path(5).write_bytes(bytes(bad))
    r = recover_part(spool, spool.part_path(5))
    assert r.outcome == "sealed"
    _, idx, _ = read_sealed(r.sealed.path)
    assert idx == list(range(6, 60))


def test_damaged_record_framing_resyncs_on_the_next_good_chunk(tmp_path):
    data, _ = crashed_part()
    chunks = chunk_offsets(data)
    for n, byte in enumerate((1, 5, 8)):  # the chunk's length field (low, middle, high byte)
        lo, _ = chunks[3]
        bad = bytearray(data)
        bad[lo + byte] ^= 0x40
        spool = Spool(tmp_path / f"f{n}", "dev")
        spool.part_path(5).write_bytes(bytes(bad))
        r = recover_part(spool, spool.part_path(5))
        assert r.outcome == "sealed"
        _, idx, gaps = read_sealed(r.sealed.path)
        assert idx == [i for i in range(60) if not 18 <= i < 24]  # only chunk 3 lost
        assert any(g["cause"] == "corrupt-chunk" for g in gaps)
