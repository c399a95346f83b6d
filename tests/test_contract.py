"""The device/collector contract: one grammar, one codec, used by both sides."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import contract
from agent.collector import tus as server_tus
from agent.config import ID_PATTERN
from agent.record.segment import segment_id as record_segment_id
from agent.record.spool import parse_name
from agent.sync import tus as client_tus
from agent.sync.watcher import parse as watcher_parse


def test_segment_id_round_trip() -> None:
    assert contract.segment_id("sim-0001", 42) == "sim-0001-00000042"
    assert contract.parse_segment_id("sim-0001-00000042") == ("sim-0001", 42)
    assert contract.parse_segment_id("a-b-c-123456789") == ("a-b-c", 123456789)
    sid = contract.segment_id("x", contract.SEQ_MAX)
    assert contract.parse_segment_id(sid) == ("x", contract.SEQ_MAX)


@pytest.mark.parametrize("bad", [
    "sim-42", "sim-0000004a", "-00000001", "sim_00000001", "a..b-00000001",
    "sim-" + "9" * 19, "sim-" + "1" * 20, "x" * 65 + "-00000001", "sim-00000001.mcap",
    "sim/x-00000001", " sim-00000001",
])
def test_parse_segment_id_refuses(bad: str) -> None:
    assert contract.parse_segment_id(bad) is None


def test_segment_id_refuses_out_of_range() -> None:
    with pytest.raises(ValueError):
        contract.segment_id("sim", contract.SEQ_MAX + 1)
    with pytest.raises(ValueError):
        contract.segment_id("sim", -1)
    with pytest.raises(ValueError):
        contract.segment_id("bad/id", 1)


def test_segment_files() -> None:
    assert contract.parse_segment_file("d-00000003.mcap") == ("d", 3)
    assert contract.parse_segment_file("d-00000003.mcap.part") == ("d", 3)
    assert contract.parse_segment_file("d-00000003.mcap.part", sealed_only=True) is None
    assert contract.parse_segment_file("d-00000003.mcap.part.1") is None
    assert contract.parse_segment_file("d-00000003.mcap.why") is None


def test_every_side_uses_the_one_grammar() -> None:
    """Device config, spool, recorder, watcher and collector agree on every sample."""
    samples = ["sim-0001-00000042", "a.b_c-123456789", "a..b-00000001", "sim-" + "9" * 19,
               "sim-42", "x" * 64 + "-00000001"]
    assert ID_PATTERN == contract.DEVICE_ID_PATTERN
    for sid in samples:
        want = contract.parse_segment_id(sid)
        assert parse_name(sid + ".mcap") == want
        assert parse_name(sid + ".mcap.part") == want
        if want is not None:
            assert record_segment_id(*want) == sid
            meta = {"device_id": want[0], "segment_id": sid, "seq": str(want[1]),
                    "sha256": "0" * 64}
            assert server_tus.validate_segment(meta, want[0]).seq == want[1]
        else:
            dev = sid.rpartition("-")[0]
            meta = {"device_id": dev, "segment_id": sid, "seq": "1", "sha256": "0" * 64}
            with pytest.raises(server_tus.TusError) as err:
                server_tus.validate_segment(meta, dev)
            assert err.value.status == 400


def test_watcher_uses_the_grammar(tmp_path: Path) -> None:
    d = tmp_path
    good = d / "sim-00000007.mcap"
    good.write_bytes(b"x")
    huge = d / ("sim-" + "9" * 19 + ".mcap")
    huge.write_bytes(b"x")
    found = watcher_parse(good)
    assert found is not None and (found.id, found.device, found.seq) == ("sim-00000007", "sim", 7)
    assert watcher_parse(huge) is None


def test_metadata_codec_round_trip() -> None:
    meta = contract.segment_metadata("sim-0001", 5, "ab" * 32)
    header = contract.encode_metadata(meta)
    assert contract.decode_metadata(header) == meta
    assert meta["segment_id"] == "sim-0001-00000005"
    assert contract.decode_metadata(contract.encode_metadata({"k": "ünï, ç"})) == {"k": "ünï, ç"}
    assert contract.decode_metadata("empty") == {"empty": ""}
    # both sides use the same codec
    assert client_tus.encode_metadata is contract.encode_metadata
    assert server_tus.parse_metadata(header) == meta


@pytest.mark.parametrize("header", [
    "k not-base64!", "k YQ== extra", "k YQ==,k YQ==", ",", "k /w==", "x" * 5000,
])
def test_metadata_decode_refuses(header: str) -> None:
    with pytest.raises(contract.MetadataError):
        contract.decode_metadata(header)
    with pytest.raises(server_tus.TusError) as err:
        server_tus.parse_metadata(header)
    assert err.value.status == 400


def test_metadata_encode_refuses() -> None:
    for key in ("bad key", "a,b", ""):
        with pytest.raises(contract.MetadataError):
            contract.encode_metadata({key: "x"})
    with pytest.raises(contract.MetadataError):
        contract.encode_metadata({"k": "x" * 4000})


def test_parse_uint_bounds() -> None:
    assert contract.parse_uint("0") == 0
    assert contract.parse_uint(str(contract.SEQ_MAX)) == contract.SEQ_MAX
    for bad in (str(contract.SEQ_MAX + 1), "99999999999999999999", "-1", "+1", " 1", "1_0",
                "", "\uff11", None):
        assert contract.parse_uint(bad) is None
    # the client's header parser and the server's share the bound
    assert client_tus.parse_int(str(contract.SEQ_MAX + 1)) is None
    with pytest.raises(server_tus.TusError):
        server_tus.parse_int("Upload-Offset", str(contract.SEQ_MAX + 1))


def test_tus_constants_shared() -> None:
    assert server_tus.TUS_VERSION == client_tus.TUS_VERSION == contract.TUS_VERSION
    assert contract.VERIFIED_HEADER.lower() == client_tus.VERIFIED_HEADER
    assert server_tus.VERIFIED_HEADER == contract.VERIFIED_HEADER
