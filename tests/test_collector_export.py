"""Exports on request from the collector: a device's take as Foxglove MCAP and as MP4, for
admin and reader tokens only, cached, and purged when the wearer discards a source segment.
The returned files are read back (mcap reader, ffprobe, PyAV) and compared with the take."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from test_collector_support import ServerThread, TusClient

from agent.collector import auth, exports
from agent.contract import discard_body, discard_path
from agent.export.reader import read_segment
from agent.record.schemas import VIDEO_TOPIC
from agent.record.spool import Spool
from tests.recordings import Take, all_samples

DEV = "dev"


@pytest.fixture
def held(tmp_path):
    """A 4 s take in two segments, uploaded and verified."""
    srv = ServerThread(tmp_path / "data", expire_seconds=3600).start()
    take = Take(seconds=4, segment_s=2)
    segs = take.write(Spool(tmp_path / "spool", DEV))
    tok = srv.enroll(DEV)
    dev = srv.client(tok)
    for s in segs:
        dev.upload(DEV, s.seq, s.path.read_bytes())
    reader = TusClient(srv.url, auth.role_token(srv.collector.store, "reader"))
    yield srv, take, segs, dev, reader
    dev.close()
    reader.close()
    srv.stop()


def ffprobe(path: Path) -> dict:
    r = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets",
                        "-show_entries", "stream=codec_name,time_base,nb_read_packets:"
                        "packet=pts", "-of", "json", str(path)],
                       capture_output=True, text=True, timeout=120, check=True)
    return dict(json.loads(r.stdout))


def test_reader_gets_the_take_as_mcap_matching_the_recording(held, tmp_path):
    srv, take, segs, _, reader = held
    listed = reader.get(f"/data/devices/{DEV}/takes")
    assert listed.status_code == 200, listed.text
    (t,) = listed.json()
    assert t["segments"] == [s.id for s in segs] and t["first_seq"] == segs[0].seq
    r = reader.get(t["mcap"])
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/x-mcap"
    out = tmp_path / "take.mcap"
    out.write_bytes(r.content)
    from mcap.reader import make_reader

    with out.open("rb") as fh:
        msgs = [(ch.topic, ch.message_encoding, m.data)
                for _, ch, m in make_reader(fh).iter_messages()]
    recorded = [r.data for s in segs for r in read_segment(s.path).topic_records(VIDEO_TOPIC)]
    assert [d for topic, _, d in msgs if topic == VIDEO_TOPIC] == recorded  # byte for byte
    assert len([1 for topic, _, _ in msgs if topic == "/wrist/left/imu"]) == len(
        all_samples(take)["host_ns"])  # one message per IMU sample
    assert {enc for _, enc, _ in msgs} <= {"protobuf", "json"}
    # cached in the backend; the second answer is the same file
    e = srv.collector.store.export(DEV, t["take"], "mcap")
    assert e is not None and (srv.data / "objects" / e.object_key).is_file()
    assert reader.get(t["mcap"]).content == r.content


def test_admin_gets_the_take_as_mp4_with_every_frame_at_its_time(held, tmp_path):
    srv, take, _, _, _ = held
    admin = TusClient(srv.url, auth.admin_token(srv.collector.store))
    (t,) = admin.get(f"/data/devices/{DEV}/takes").json()
    r = admin.get(t["mp4"])
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
    mp4 = tmp_path / "take.mp4"
    mp4.write_bytes(r.content)
    info = ffprobe(mp4)
    st = info["streams"][0]
    assert st["codec_name"] == "h264" and st["time_base"] == "1/90000"
    assert int(st["nb_read_packets"]) == len(take.frames)
    t0 = take.frames[0].host_ts_ns
    for p, f in zip(info["packets"], take.frames, strict=True):
        assert abs(int(p["pts"]) / 90_000 - (f.host_ts_ns - t0) / 1e9) <= 1 / 90_000
    import av

    with av.open(str(mp4)) as c:
        n = sum(1 for _ in c.decode(video=0))
    assert n == len(take.frames)
    admin.close()


def test_device_tokens_never_export_and_bad_names_are_clear(held):
    srv, _, _, dev, reader = held
    (t,) = reader.get(f"/data/devices/{DEV}/takes").json()
    for path in (f"/data/devices/{DEV}/takes", t["mcap"], t["mp4"]):
        assert dev.get(path).status_code == 403, path
        assert TusClient(srv.url, None).get(path).status_code == 401, path
    assert srv.collector.store.export(DEV, t["take"], "mcap") is None  # nothing was made
    assert reader.get(f"/data/devices/{DEV}/takes/{t['take']}.avi").status_code == 404
    assert reader.get(f"/data/devices/{DEV}/takes/dev-00000099.mcap").status_code == 404
    assert reader.get("/data/devices/nobody/takes").status_code == 404


def test_export_is_purged_when_the_wearer_discards_a_source(held):
    srv, _, segs, dev, reader = held
    (t,) = reader.get(f"/data/devices/{DEV}/takes").json()
    for fmt in ("mcap", "mp4"):
        assert reader.get(t[fmt]).status_code == 200
    keys = [srv.collector.store.export(DEV, t["take"], f).object_key for f in ("mcap", "mp4")]
    assert all((srv.data / "objects" / k).is_file() for k in keys)
    s = segs[1]
    body = discard_body("r", [(s.id, hashlib.sha256(s.path.read_bytes()).hexdigest(), None)])
    assert dev.http.post(discard_path(DEV), headers=dev.headers, json=body).status_code == 200
    assert not any((srv.data / "objects" / k).exists() for k in keys)
    assert srv.collector.store.export(DEV, t["take"], "mcap") is None
    assert reader.get(t["mcap"]).status_code == 404  # that take is no more
    (left,) = reader.get(f"/data/devices/{DEV}/takes").json()
    assert left["segments"] == [segs[0].id]


def test_without_the_export_extra_the_answer_is_501(held, monkeypatch):
    _, _, _, _, reader = held
    monkeypatch.setitem(exports.FORMATS, "mp4", ("mp4", ["wearcap_not_installed_module"]))
    (t,) = reader.get(f"/data/devices/{DEV}/takes").json()
    r = reader.get(t["mp4"])
    assert r.status_code == 501 and "pip install 'wearcap[export]'" in r.text
