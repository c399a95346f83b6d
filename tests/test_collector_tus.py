"""Sans-IO tus rules and completeness arithmetic, without a server."""

from __future__ import annotations

import base64
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.collector import tus
from agent.collector.completeness import missing_ranges, summarize
from agent.collector.tus import TusError

SHA = "ab" * 32


def meta(**kw: str) -> dict[str, str]:
    base = {"device_id": "dev-1", "segment_id": "dev-1-00000007", "seq": "7", "sha256": SHA,
            "filename": "dev-1-00000007.mcap"}
    base.update(kw)
    return base


def status(fn, *args) -> int:
    with pytest.raises(TusError) as info:
        fn(*args)
    return info.value.status


def test_metadata_round_trip():
    header = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in meta().items())
    parsed = tus.parse_metadata(header + ",flag")
    assert parsed["segment_id"] == "dev-1-00000007" and parsed["flag"] == ""
    seg = tus.validate_segment(parsed, "dev-1")
    assert (seg.seq, seg.sha256, seg.filename) == (7, SHA, "dev-1-00000007.mcap")


@pytest.mark.parametrize("header", ["a !!!", "a b c", " ,", "a YQ==,a YQ==", "k\x01 YQ=="])
def test_malformed_metadata_is_400(header):
    assert status(tus.parse_metadata, header) == 400


@pytest.mark.parametrize("field,value", [
    ("segment_id", "../dev-1-00000007"),
    ("segment_id", "dev-1/../../x-00000007"),
    ("segment_id", "dev-1-0000000\x007"),
    ("segment_id", "dev-1-" + "1" * 200),
    ("segment_id", "dev-1-7"),
    ("filename", "../../etc/passwd"),
    ("filename", "a" * 300),
    ("filename", "x\\y.mcap"),
    ("device_id", ".."),
    ("device_id", "dev/1"),
    ("seq", "-7"),
    ("seq", "8"),
    ("sha256", "zz" * 32),
])
def test_path_tricks_and_bad_fields_are_400(field, value):
    assert status(tus.validate_segment, meta(**{field: value}), "dev-1") == 400


def test_other_namespace_is_403():
    other = meta(device_id="dev-2", segment_id="dev-2-00000007")
    assert status(tus.validate_segment, other, "dev-1") == 403
    mixed = meta(segment_id="dev-2-00000007")  # own device_id, someone else's segment
    assert status(tus.validate_segment, mixed, "dev-1") == 403


def test_missing_required_metadata_is_400():
    m = meta()
    del m["sha256"]
    assert status(tus.validate_segment, m, "dev-1") == 400


def test_headers():
    assert status(tus.check_version, None) == 412
    assert status(tus.check_version, "0.2.2") == 412
    assert status(tus.parse_length, "12", None, 10) == 413
    assert status(tus.parse_length, "-1", None, 10) == 400
    assert status(tus.parse_length, None, "1", 10) == 400
    assert status(tus.check_patch, "text/plain", "0", 0) == 415
    assert status(tus.check_patch, tus.OFFSET_CONTENT_TYPE, "5", 0) == 409
    assert status(tus.check_body_size, "11", 0, 10) == 413
    assert status(tus.parse_checksum, "md5 AAAA") == 400
    assert status(tus.parse_checksum, "sha1 ***") == 400
    assert status(tus.parse_checksum, "sha1 AAAA") == 400  # wrong digest length
    assert tus.parse_checksum(None) is None


def test_transitions_refuse_what_is_not_in_the_table():
    assert tus.next_state("open", "last_patch") == "complete"
    assert status(tus.next_state, "verified", "patch") == 409
    assert status(tus.next_state, "expired", "hash_match") == 409


def test_missing_ranges_with_gaps():
    assert missing_ranges([0, 1, 3, 6], 0, 6) == [(2, 2), (4, 5)]
    assert missing_ranges([], 0, 3) == [(0, 3)]
    assert missing_ranges([5], 0, 5) == [(0, 4)]
    report = summarize("d", 0, [(0, "verified", 10), (1, "open", 5), (3, "verified", 10)])
    assert report["missing"] == [[1, 2]] and report["highest_seq"] == 3
    assert (report["received"], report["verified"], report["complete"]) == (3, 2, False)


@given(st.sets(st.integers(0, 200)), st.integers(0, 50))
def test_missing_ranges_partition(have, first):
    last = max(have | {first})
    gaps = missing_ranges(have, first, last)
    missing = {s for a, b in gaps for s in range(a, b + 1)}
    assert missing == set(range(first, last + 1)) - have
    assert all(b1 + 1 < a2 for (_, b1), (a2, _) in itertools.pairwise(gaps))
