"""Polar PMD frames against the vendor SDK's own test vectors, plus streams and gaps."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from agent.sim.band_model import POLAR_EPOCH_OFFSET_NS, BandModel, BandParams
from agent.wrist.decode import MISSING, make_decoder, polar_pmd
from agent.wrist.decode.polar_pmd import ACC, GYRO, PolarDecoder, parse_frame, parse_header

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "vectors" / "polar_pmd.json"
LOCAL = HERE / "vectors" / "polar_pmd.json"


def load_vectors() -> dict:
    path = LOCAL if LOCAL.is_file() else SHARED
    if not path.is_file():
        pytest.skip(f"Polar vectors absent: neither {LOCAL} nor {SHARED} exists")
    return json.loads(path.read_text())


VEC = load_vectors() if (LOCAL.is_file() or SHARED.is_file()) else {"vectors": [],
                                                                       "header_vectors": []}


def test_vector_copy_matches_the_shared_file():
    if not SHARED.is_file():
        pytest.skip(f"{SHARED} absent; using the repo copy only")
    assert json.loads(SHARED.read_text()) == json.loads(LOCAL.read_text())


@pytest.mark.parametrize("v", VEC["vectors"], ids=lambda v: v["name"])
def test_frame_vectors(v):
    ctx, exp = v["decode_context"], v["expected"]
    fr = parse_frame(bytes.fromhex(v["frame_hex"]), ctx["previous_timestamp_ns"],
                     ctx["sample_rate_hz"])
    assert fr.compressed == v["compressed"]
    assert len(fr.raw) == exp["sample_count"]
    for key in ("samples_mG", "raw_samples"):
        for i, xyz in exp.get(key, {}).items():
            assert fr.raw[int(i)] == xyz
    for i, xyz in exp.get("samples_dps", {}).items():
        assert fr.values(ctx["factor"])[int(i)].tolist() == xyz
    for i, bits in exp.get("float_bits", {}).items():
        assert [b & 0xFFFFFFFF for b in fr.raw[int(i)]] == [int(h, 16) for h in bits]
        want = [struct.unpack("<f", struct.pack("<I", int(h, 16)))[0] * ctx["factor"]
                for h in bits]
        assert np.allclose(fr.values(ctx["factor"])[int(i)], want, rtol=1e-6)
    for i, t in exp.get("timestamps_ns", {}).items():
        assert fr.timestamps_ns[-1 if i == "last" else int(i)] == t
    if "range_check" in exp:
        f32 = np.float32(ctx["factor"])
        mg = (f32 * np.array(fr.raw, np.float32) * np.float32(1000)).astype(np.int32)
        assert np.all(np.abs(mg) <= 8000)
    if v["name"] == "acc_delta_type0_factor":
        p, t = ctx["previous_timestamp_ns"], 2_000_000_000
        assert fr.timestamps_ns[0] == round(p + (t - p) / exp["sample_count"])


@pytest.mark.parametrize("v", [h for h in VEC["header_vectors"] if "frame_hex" in h],
                         ids=lambda v: v["name"])
def test_header_vectors(v):
    meas, ts, comp, ftype, content = parse_header(bytes.fromhex(v["frame_hex"]))
    e = v["expected"]
    assert (meas, ts, comp, ftype, content.hex()) == (
        e["measurement_type"], e["timestamp_ns"], e["compressed"], e["frame_type"],
        e["data_content_hex"])


def test_previous_timestamp_chain_ignores_other_measurements():
    (v,) = [h for h in VEC["header_vectors"] if h["name"] == "previous_timestamp_sequence"]
    dec = PolarDecoder(rate_hz=52)
    want = iter(v["expected"]["acc_frames"])
    for hx in v["frames_hex"]:
        frame = bytes.fromhex(hx)
        if frame[0] & 0x3F == ACC:
            w = next(want)
            assert dec.previous_timestamp(ACC) == w["previous_timestamp_ns"]
            dec.feed(frame, 0)
            assert dec.previous_timestamp(ACC) == w["timestamp_ns"]
        else:
            dec.feed(frame, 0)
    assert dec.ignored == 2  # the PPI frames


def test_stream_pairs_acc_and_gyro_one_notification_at_a_time():
    model = BandModel(BandParams(profile="polar-pmd", rate_hz=208, seed=2), 0, record=True)
    dec = make_decoder("polar-pmd", rate_hz=208)
    n = 0
    for d in model.deliveries_until(4_000_000_000):
        for c in dec.feed(d.packet, d.host_ns):
            assert c.gyro is not None and c.index == n
            assert model.recorded is not None
            for i in range(c.n):
                a, g = model.recorded[c.index + i]
                assert c.acc[i].tolist() == a.tolist() and c.gyro[i].tolist() == g.tolist()
                true_dev = int(model.device_ns(c.index + i)) + POLAR_EPOCH_OFFSET_NS
                # exact up to rounding, but the first frame is spaced at the nominal rate
                assert abs(c.device_ns(i) - true_dev) <= (2 if c.index else 1000)
            n += c.n
    assert n > 700 and dec.malformed == 0


def test_acc_without_gyro_is_kept_with_missing_gyro_axes():
    dec = PolarDecoder(rate_hz=52, hold_ns=500_000_000)
    out = []
    ts = 10**18
    for i in range(1, 8):
        s = np.full((13, 3), i, np.int16)
        out += dec.feed(polar_pmd.encode_frame(ACC, ts + i * 250_000_000, 0x81, s), i)
    assert out and all(c.gyro is not None and (c.gyro == MISSING).all() for c in out)
    assert sum(c.n for c in out) >= 13 * 4


def test_gyro_float_frames_are_quantised_to_the_declared_step():
    dec = PolarDecoder(rate_hz=52)
    raw = bytes.fromhex(next(v for v in VEC["vectors"]
                             if v["name"] == "gyro_delta_type1_float")["frame_hex"])
    dec.feed(bytes.fromhex("020094357700000000810000000000000000000000000000"), 0)
    (c,) = dec.feed(raw, 1) or [None]
    assert c is not None
    dps = c.gyro.astype(float) * c.gyro_scale * 180 / np.pi
    assert np.allclose(dps[0], [1.0, 10.0, 20.0], atol=2000 / 32768 / 2 + 1e-9)
    assert dec.malformed == 0 and GYRO == 5


def test_frames_lost_with_the_link_are_counted_by_the_band_clock_and_not_spread():
    """A lost link drops the frames the band had queued. The SDK's spacing, (ts - prev) / n,
    spread the next frame's samples over the whole gap (each up to the gap off) and nothing
    counted the loss; the band's clock says how many samples it took meanwhile."""
    period = round(1e9 / 52)
    enc, dec = polar_pmd.PolarEncoder(), PolarDecoder(rate_hz=52)
    t0 = POLAR_EPOCH_OFFSET_NS + 10**12
    acc = np.zeros((16, 3), dtype=np.int16)
    chunks = []
    for frame in range(8):
        if frame in (3, 4):
            continue  # two frames (32 samples) gone with the link
        dev = t0 + (frame * 16 + np.arange(16)) * period
        for pkt in enc.encode(dev, acc, acc):
            chunks += dec.feed(pkt, frame * 10**9)
    chunks += dec.flush()
    after = [c for c in chunks if c.lost_before]
    assert [c.lost_before for c in after] == [32]
    assert after[0].index == 5 * 16 and after[0].period_ns == pytest.approx(period, abs=2)
    assert after[0].device_t0_ns == pytest.approx(t0 + 5 * 16 * period, abs=16)
    assert sum(c.n for c in chunks) == 6 * 16
