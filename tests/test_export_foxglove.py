"""wearcap export --to foxglove: read back by @mcap/core (Foxglove's reader) with every message
decoded by protobufjs from the file's own FileDescriptorSets, compared with the recording."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.export.reader import read_segment
from agent.export.streams import imu_streams
from agent.record.schemas import VIDEO_TOPIC
from agent.record.spool import Spool
from tests.conftest import REPO, run_cli
from tests.h264_frames import T0_NS
from tests.recordings import ACC_SCALE, GYRO_SCALE, REALTIME_AT_T0, Take, all_samples

JS = REPO / "tests" / "mcapjs"
FIXTURES = REPO / "tests" / "fixtures"
FOXGLOVE_ENCODINGS = {"protobuf", "json", "flatbuffer", "ros1", "cdr"}


def _js_ready() -> None:
    if shutil.which("node") and (JS / "node_modules" / "@mcap" / "core").is_dir():
        return
    msg = "node and tests/mcapjs/node_modules (./install.sh --dev) are needed"
    if os.environ.get("CI") == "true":
        pytest.fail(msg)
    pytest.skip(msg)


def read_js(path: Path, tmp: Path) -> list[dict]:
    """Every message of ``path`` as @mcap/core + protobufjs decode it."""
    _js_ready()
    out = tmp / (path.name + ".jsonl")
    r = subprocess.run(["node", str(JS / "read_export.mjs"), str(path), str(out)],
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in out.read_text().splitlines() if line]


def export(tmp: Path, *paths: Path | str, extra: tuple[str, ...] = ()) -> dict:
    r = run_cli("export", *map(str, paths), "--to", "foxglove", str(tmp / "out"), "--json",
                *extra)
    assert r.returncode == 0, r.stderr
    return {"takes": json.loads(r.stdout), "stderr": r.stderr}


def wall(host_ns: int) -> int:
    return REALTIME_AT_T0 + host_ns - T0_NS


def test_every_sample_frame_and_gap_read_back_by_foxglove_reader(tmp_path):
    spool = Spool(tmp_path / "spool", "dev")
    take = Take(seconds=4, segment_s=2, drop_frames=(40, 3), lose_imu=(300, 20))
    segs = take.write(spool)
    res = export(tmp_path, tmp_path / "spool")
    assert len(res["takes"]) == 1 and res["takes"][0]["segments"] == [s.id for s in segs]
    out = Path(res["takes"][0]["files"][0])
    msgs = read_js(out, tmp_path)
    assert {m["encoding"] for m in msgs} <= FOXGLOVE_ENCODINGS
    by: dict[str, list[dict]] = {}
    for m in msgs:
        by.setdefault(m["topic"], []).append(m)

    # IMU: every sample, raw and scaled, device and host time, bound; log_time on the wall
    truth = all_samples(take)
    imu = by["/wrist/left/imu"]
    assert {m["schema"] for m in imu} == {"wearcap.export.ImuSample"}
    assert len(imu) == len(truth["host_ns"]) == 800 - 20
    for i, m in enumerate(imu):
        p = m["message"]
        host = int(truth["host_ns"][i])
        assert int(p["host_ns"]) == host and int(m["logTime"]) == wall(host)
        assert int(p["timestamp"]["seconds"]) * 10**9 + p["timestamp"]["nanos"] == wall(host)
        assert int(p["device_ns"]) == int(truth["device_ns"][i]) and p["has_device_time"]
        assert int(p["index"]) == int(truth["index"][i])
        assert [p["acc_raw"][k] for k in "xyz"] == truth["acc"][i].tolist()
        assert [p["gyro_raw"][k] for k in "xyz"] == truth["gyro"][i].tolist()
        for k, raw in zip("xyz", truth["acc"][i].tolist(), strict=True):
            assert p["acc"][k] == pytest.approx(raw * ACC_SCALE, rel=1e-12, abs=1e-12)
        for k, raw in zip("xyz", truth["gyro"][i].tolist(), strict=True):
            assert p["gyro"][k] == pytest.approx(raw * GYRO_SCALE, rel=1e-12, abs=1e-12)
        assert int(p["error_bound_ns"]) == 450_000

    # video: the recorded messages, byte for byte, on the wall clock
    recorded = [r for s in segs for r in read_segment(s.path).topic_records(VIDEO_TOPIC)]
    video = by[VIDEO_TOPIC]
    assert len(video) == len(recorded) == 117
    for m, r in zip(video, recorded, strict=True):
        assert int(m["logTime"]) == wall(r.log_time)
        assert m["message"]["format"] == "h264"
        assert int(m["message"]["timestamp"]["seconds"]) * 10**9 + \
            m["message"]["timestamp"]["nanos"] == r.log_time  # host time kept in the payload
    from mcap.reader import make_reader

    with out.open("rb") as fh:
        exported = [m.data for _, ch, m in make_reader(fh).iter_messages()
                    if ch.topic == VIDEO_TOPIC]
    assert exported == [r.data for r in recorded]
    assert [m["message"]["data"]["$bytes"] for m in video] == [
        hashlib.sha256(f.data).hexdigest() for f in take.frames]

    # frame timing, gaps, clock fits, segment placements
    frames = by["/camera/frames"]
    assert [int(m["message"]["index"]) for m in frames] == [f.index for f in take.frames]
    assert [int(m["message"]["host_ns"]) for m in frames] == [f.host_ts_ns for f in take.frames]
    assert [int(m["message"]["dropped_before"]) for m in frames].count(3) == 1
    gaps = {(g["message"]["stream"], int(g["message"]["lost"])) for g in by["/wearcap/gaps"]}
    assert gaps == {(VIDEO_TOPIC, 3), ("/wrist/left/imu", 20)}
    fits = by["/wearcap/clock/left"]
    assert len(fits) == 2 and all(int(f["message"]["error_bound_ns"]) == 450_000 for f in fits)
    starts = by["/wearcap/segments"]
    assert [s["message"]["segment_id"] for s in starts] == [s.id for s in segs]
    assert all(s["message"]["placement"].startswith("own anchor") for s in starts)


def test_takes_split_at_reboot_sequence_break_and_pause(tmp_path):
    spool = Spool(tmp_path / "spool", "dev")
    pause = {"segment": 1, "stream": "*", "start_ns": T0_NS + 3_000_000_000,
             "end_ns": T0_NS + 3_000_000_000, "lost": 0, "cause": "pause: button"}
    Take(seconds=6, segment_s=2, extra_gaps=[pause]).write(spool)       # seq 0-2, pause in 1
    Take(seconds=2, segment_s=2, boot="another-boot").write(spool)     # seq 3: new boot
    Take(seconds=2, segment_s=2, boot="another-boot").write(spool)     # seq 4
    (spool.sealed / "dev-00000004.mcap").unlink()                      # gone: a break
    Take(seconds=2, segment_s=2, boot="another-boot").write(spool)     # seq 5
    res = export(tmp_path, spool.sealed)
    got = [(t["segments"], t["ends"]) for t in res["takes"]]
    assert [g[0] for g in got] == [["dev-00000000", "dev-00000001"], ["dev-00000002"],
                                   ["dev-00000003"], ["dev-00000005"]]
    assert got[0][1].startswith("pause in dev-00000001")
    assert got[1][1].startswith("the device rebooted")
    assert got[2][1].startswith("sequence break")
    first = read_js(Path(res["takes"][0]["files"][0]), tmp_path)
    logs = [m for m in first if m["topic"] == "/wearcap/events"]
    assert [m["schema"] for m in logs] == ["foxglove.Log"]
    assert logs[0]["message"]["message"] == "pause: button"
    assert int(logs[0]["logTime"]) == wall(T0_NS + 3_000_000_000)


def test_segment_sealed_before_ntp_is_placed_by_a_later_anchor_of_its_boot(tmp_path):
    spool = Spool(tmp_path / "spool", "dev")
    # The first segment's wall clock was a day off and not synchronised.
    t = Take(seconds=4, segment_s=2, ntp=[False, True])
    t.build()
    orig = t.anchor

    def anchor(seg, mono):
        a = orig(seg, mono)
        return a if seg else type(a)(a.boot_id, a.monotonic_ns, a.realtime_ns - 86_400 * 10**9,
                                     a.uncertainty_ns, False)
    t.anchor = anchor  # type: ignore[method-assign]
    segs = t.write(spool)
    res = export(tmp_path, spool.sealed)
    place = res["takes"][0]["placements"][segs[0].id]
    assert place["anchor_segment"] == segs[1].id and "before NTP" in place["how"]
    msgs = read_js(Path(res["takes"][0]["files"][0]), tmp_path)
    imu = [m for m in msgs if m["topic"] == "/wrist/left/imu"]
    assert int(imu[0]["logTime"]) == wall(T0_NS)  # the right day, not the unsynced one
    starts = [m["message"] for m in msgs if m["topic"] == "/wearcap/segments"]
    assert starts[0]["anchor_segment"] == segs[1].id
    r = run_cli("export", str(spool.sealed), "--to", "foxglove", str(tmp_path / "o2"))
    assert f"{segs[0].id}: anchor of the later segment {segs[1].id}" in r.stdout


def test_legacy_imu_encodings_still_export(tmp_path):
    for c in ("e217936", "c696782"):
        truth = json.loads((FIXTURES / f"legacy-imu-{c}.truth.json").read_text())
        res = export(tmp_path / c, FIXTURES / f"legacy-imu-{c}.mcap")
        msgs = read_js(Path(res["takes"][0]["files"][0]), tmp_path)
        imu = [m["message"] for m in msgs if m["topic"] == "/wrist/left/imu"]
        assert [int(m["host_ns"]) for m in imu] == truth["host_ns"], c
        assert [[m["acc_raw"][k] for k in "xyz"] for m in imu] == truth["acc"], c
        assert [int(m["index"]) for m in imu] == truth["index"], c


def test_todays_recorder_segments_still_export(tmp_path):
    """Three segments of the simulated rig recorded by wearcap 0.1.0 on 2026-12-01 (before
    the wrist-time and MCU changes)."""
    src = sorted((FIXTURES / "recorder-0.1.0-2026-12-01").glob("*.mcap"))
    res = export(tmp_path, *src)
    assert len(res["takes"]) == 1 and len(res["takes"][0]["segments"]) == 3
    msgs = read_js(Path(res["takes"][0]["files"][0]), tmp_path)
    topics = {m["topic"] for m in msgs}
    assert {"/camera/h264", "/camera/frames", "/wrist/left/imu", "/wrist/right/imu",
            "/wearcap/gaps", "/wearcap/segments"} <= topics
    n_rec = {t: sum(len(s) for s in (imu_streams(read_segment(p)).get(t) for p in src) if s)
             for t in ("/wrist/left/imu", "/wrist/right/imu")}
    for t, n in n_rec.items():
        assert n > 0 and sum(1 for m in msgs if m["topic"] == t) == n
    years = {int(m["logTime"]) // 10**9 // (365 * 86400) for m in msgs}
    assert years == {56}  # 2026, not 1970: log_time is the wall clock


def test_bad_inputs_are_named_and_damage_is_a_gap(tmp_path):
    spool = Spool(tmp_path / "spool", "dev")
    segs = Take(seconds=4, segment_s=4, chunk_bytes=8 << 10).write(spool)
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"not mcap at all")
    r = run_cli("export", str(junk), "--to", "foxglove", str(tmp_path / "o"))
    assert r.returncode == 2 and f"{junk}: not an MCAP file" in r.stderr
    assert "Traceback" not in r.stderr
    from mcap.writer import Writer

    foreign = tmp_path / "foreign.mcap"
    with foreign.open("wb") as fh:
        w = Writer(fh)
        w.start()
        sid = w.register_schema("x", "jsonschema", b"{}")
        w.add_message(w.register_channel("/x", "json", sid), log_time=1, data=b"{}",
                      publish_time=1)
        w.finish()
    r = run_cli("export", str(foreign), "--to", "foxglove", str(tmp_path / "o"))
    assert r.returncode == 2 and f"{foreign}: an MCAP file, but not a wearcap segment" in r.stderr
    from tests.test_inspect import flip_in_chunk

    bad = flip_in_chunk(segs[0].path)
    r = run_cli("export", str(bad), "--to", "foxglove", str(tmp_path / "o3"), "--json")
    assert r.returncode == 0, r.stderr
    assert f"{bad}: 1 damaged chunk(s) failed their CRC; skipped and exported as gaps" in r.stderr
    out = Path(json.loads(r.stdout)[0]["files"][0])
    msgs = read_js(out, tmp_path)
    damaged = [m["message"] for m in msgs if m["topic"] == "/wearcap/gaps"
               and m["message"]["cause"].startswith("damaged-chunk")]
    assert len(damaged) == 1 and damaged[0]["stream"] == "*"
    r = run_cli("export", str(segs[0].path), "--to", "nothing", str(tmp_path / "o4"))
    assert r.returncode == 2


def test_protobuf_schemas_are_self_contained_descriptor_sets():
    from google.protobuf import descriptor_pb2

    from agent.export import protos

    for name in ("ImuSample", "FrameTiming", "ClockFit", "Gap", "SegmentStart"):
        fds = descriptor_pb2.FileDescriptorSet.FromString(protos.descriptor_set(name))
        files = [f.name for f in fds.file]
        assert files[-1] == "wearcap/export.proto" and "google/protobuf/timestamp.proto" in files
    m = protos.classes()["ImuSample"](host_ns=5)
    assert protos.classes()["ImuSample"].FromString(m.SerializeToString()).host_ns == 5


def test_head_mcu_streams_export_one_protobuf_message_per_sample_and_row(tmp_path):
    """Segments recorded with the head MCU on the simulated rig (wearcap 0.1.0, 2026-12-01):
    the 1 kHz head IMU per sample, strobes, battery and clock exchanges per row."""
    import msgpack

    src = sorted((FIXTURES / "recorder-0.1.0-2026-12-01-mcu").glob("*.mcap"))
    res = export(tmp_path, *src)
    msgs = read_js(Path(res["takes"][0]["files"][0]), tmp_path)
    assert {m["encoding"] for m in msgs} == {"protobuf"}
    segs = [read_segment(p) for p in src]
    head = [m["message"] for m in msgs if m["topic"] == "/head/imu"]
    rec = [imu_streams(s)["/head/imu"] for s in segs]
    assert [int(m["host_ns"]) for m in head] == [int(t) for r in rec for t in r.host_ns]
    assert [[m["acc_raw"][k] for k in "xyz"] for m in head] == [
        a for r in rec for a in r.acc.tolist()]
    for topic, col in (("/head/strobe", "host_mid_ns"), ("/head/battery", "millivolts"),
                       ("/head/clock", "host_send_ns")):
        rows = [v for s in segs for r in s.topic_records(topic)
                for v in msgpack.unpackb(r.data)[col]]
        got = [int(m["message"][col]) for m in msgs if m["topic"] == topic]
        assert got == rows and rows, topic
    strobe = next(m for m in msgs if m["topic"] == "/head/strobe")
    host = int(strobe["message"]["host_mid_ns"])
    place = res["takes"][0]["placements"][segs[0].id]
    assert int(strobe["logTime"]) == place["realtime_ns"] + host - place["monotonic_ns"]


def test_a_discarded_segment_ends_the_take_and_says_so(tmp_path):
    spool = Spool(tmp_path / "spool", "dev")
    segs = Take(seconds=6, segment_s=2).write(spool)
    (tmp_path / "spool" / "tombstones").mkdir()
    (tmp_path / "spool" / "tombstones" / f"{segs[1].id}.json").write_text("{}")
    segs[1].path.chmod(0o644)
    segs[1].path.unlink()
    res = export(tmp_path, tmp_path / "spool")
    assert [t["segments"] for t in res["takes"]] == [[segs[0].id], [segs[2].id]]
    assert res["takes"][0]["ends"] == f"discarded by the wearer: {segs[1].id}"
