"""Crash harnesses: kill -9 a recording mid-segment, restart, and measure what was lost.

The promise: a kill -9 at any instant loses at most one chunk (``segment.chunk_seconds``) +
0.1 s of EACH stream; the partial segment is recovered, sealed and flagged. Loss is measured
per stream, never as the last message of any topic: for a wrist band, the samples its
(simulated) band had sent by the instant of the kill, minus those on disk and those counted in
gaps; the bands run in this process, so they outlive the killed agent and say what they sent.
The short version runs a few trials; ``--long`` runs 24 over every profile. Each run prints
its trials and the worst loss per stream.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

import msgpack
import pytest
from mcap.reader import make_reader

from agent.record.recover import recover_all
from agent.record.schemas import frame_rows
from agent.record.spool import Spool
from agent.sources import GAP_TOPIC
from tests.conftest import REPO

CHUNK_S = 1.0
SLACK_S = 1.0  # scheduling on a loaded 2-core machine; the design bound is CHUNK_S


_UCRED = struct.Struct("3i")  # pid, uid, gid


class Notify:
    """A NOTIFY_SOCKET the child reports READY=1 on, as systemd would listen: only the main
    process counts (systemd's default NotifyAccess=main). Helpers the child starts inherit
    the socket (the simulated rig's D-Bus daemon reports READY=1 on it by itself)."""

    def __init__(self, tmp: Path) -> None:
        self.path = str(tmp / f"notify-{uuid.uuid4().hex[:8]}.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(self.path)
        self.pid: int | None = None
        self.ignored: list[tuple[int, str]] = []

    def wait_for(self, state: str, timeout: float = 60.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.sock.settimeout(max(0.01, end - time.monotonic()))
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(_UCRED.size))
            except TimeoutError:
                return False
            sender = next((_UCRED.unpack_from(d)[0] for lvl, typ, d in anc
                           if lvl == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS),
                          None)
            msg = data.decode(errors="replace")
            if self.pid is not None and sender != self.pid:
                self.ignored.append((sender or -1, msg))
                continue
            if state in msg.split("\n"):
                return True
        return False

    def close(self) -> None:
        self.sock.close()
        os.unlink(self.path)


def spawn(args: list[str], tmp: Path, notify: Notify) -> subprocess.Popen[str]:
    env = {**os.environ, "NOTIFY_SOCKET": notify.path, "PYTHONPATH": str(REPO)}
    p = subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    notify.pid = p.pid
    return p


def kill_trial(args: list[str], spool_dir: Path, device: str, tmp: Path, run_s: float):
    notify = Notify(tmp)
    p = spawn(args, tmp, notify)
    try:
        assert notify.wait_for("READY=1"), p.stderr.read() if p.poll() is not None else "no READY"
        time.sleep(run_s)
        kill_ns = time.monotonic_ns()
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()
        p.stderr.close()
        notify.close()
    parts = list((spool_dir / "active").glob("*.mcap.part"))
    assert len(parts) == 1, "the open segment is left as a part file"
    results = recover_all(Spool(spool_dir, device))
    assert [r.outcome for r in results] == ["sealed"], results
    r = results[0]
    assert r.last_log_ns is not None
    return (kill_ns - r.last_log_ns) / 1e9, r


def test_kill9_mid_segment_loses_at_most_about_a_second(tmp_path, long_run):
    rng = random.Random(3)
    trials = 12 if long_run else 3
    losses = []
    for i in range(trials):
        spool = tmp_path / f"spool{i}"
        run_s = 1.3 + rng.random() * 1.5  # mid-chunk, mid-segment
        loss, r = kill_trial(["-m", "tests.h264_frames", str(spool), str(CHUNK_S)],
                             spool, "crash", tmp_path, run_s)
        losses.append(loss)
        assert r.frames > 0 and r.sealed is not None
        assert loss <= CHUNK_S + SLACK_S, f"lost {loss:.2f} s"
    print(f"\nkill -9 trials: {trials}; seconds lost at the kill: "
          f"max {max(losses):.2f}, mean {sum(losses) / len(losses):.2f} "
          f"(bound {CHUNK_S:.1f} s of chunking)")


def test_kill9_of_wearcap_run_then_restart_recovers(tmp_path):
    from tests.conftest import run_cli

    cfg = tmp_path / "c.toml"
    cfg.write_text('profile = "sim"\n[camera]\nwidth = 320\nheight = 240\n'
                   "[spool]\nreserve_mb = 0\n")
    spool = tmp_path / "spool"
    loss, r = kill_trial(["-m", "agent", "run", "--config", str(cfg), "--spool", str(spool)],
                         spool, "sim-0001", tmp_path, 2.5)
    print(f"\nwearcap run kill -9: {r.frames} frames recovered, {loss:.2f} s lost at the kill")
    assert loss <= CHUNK_S + SLACK_S
    r2 = run_cli("run", "--config", str(cfg), "--spool", str(spool), "--duration", "1")
    assert r2.returncode == 0, r2.stderr
    assert len(list((spool / "sealed").glob("*.mcap"))) == 2


def test_sigterm_seals_and_exits_0(tmp_path):
    """`wearcap run` (camera off, so this runs on any machine) sealed on SIGTERM."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('profile = "sim"\n[camera]\nbackend = "none"\n[spool]\nreserve_mb = 0\n')
    spool = tmp_path / "spool"
    notify = Notify(tmp_path)
    p = spawn(["-m", "agent", "run", "--config", str(cfg), "--spool", str(spool)], tmp_path,
              notify)
    try:
        assert notify.wait_for("READY=1")
        p.send_signal(signal.SIGTERM)
        _out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
        notify.close()
    assert p.returncode == 0, err
    assert len(list((spool / "sealed").glob("sim-0001-*.mcap"))) == 1
    assert not list((spool / "active").iterdir())
    assert "sealed sim-0001-00000000" in err


# ---------------------------------------------------------------- per-stream loss, wrist bands

PAIRS = [(("wearcap-open", 200), ("polar-pmd", 52)), (("movesense", 104), ("witmotion", 50))]
BOUND_S = CHUNK_S + 0.1
"""Per stream: one chunk (the writer closes batches and fsyncs at every chunk) + 0.1 s."""
LAG_S = 0.1
"""A wrist stream on disk may end at most this much before the last video frame on disk."""


def _read_streams(path: Path) -> tuple[dict[str, int], dict[str, int], int | None]:
    """(samples stored per wrist topic, samples counted lost in gaps per topic, last frame)."""
    stored: dict[str, int] = {}
    counted: dict[str, int] = {}
    last_frame: int | None = None
    with path.open("rb") as fh:
        for _, ch, m in make_reader(fh, validate_crcs=True).iter_messages(
                log_time_order=False):
            if ch.message_encoding != "msgpack":
                continue
            p = msgpack.unpackb(m.data)
            if ch.topic == "/camera/frames":
                t = max(int(r["host_ts_ns"]) for r in frame_rows(p))
                last_frame = t if last_frame is None else max(last_frame, t)
            elif ch.topic.endswith("/imu"):
                stored[ch.topic] = stored.get(ch.topic, 0) + int(p["n"])
            elif ch.topic == GAP_TOPIC and int(p["lost"]) > 0:
                counted[p["stream"]] = counted.get(p["stream"], 0) + int(p["lost"])
    return stored, counted, last_frame


def wrist_kill_trial(tmp: Path, i: int, pair: tuple[tuple[str, int], ...], run_s: float
                     ) -> tuple[dict[str, float], dict[str, float]]:
    """One kill -9 of ``wearcap run`` recording two simulated bands. Per stream: seconds of
    samples the band had sent by the kill that are not on disk (nor counted in a gap), and
    seconds of those sent by ``LAG_S`` before the last video frame on disk that are not."""
    from dataclasses import replace

    from agent import config
    from agent.sim.rig import SimRig, sim_address

    base = config.load_default(config.find_profile("sim", "<test>"))
    bands = [replace(base.wrist[j], profile=prof, rate_hz=rate, address=sim_address(j))
             for j, (prof, rate) in enumerate(pair)]
    cfg = replace(base, wrist=bands)
    text = ('profile = "sim"\n[camera]\nwidth = 320\nheight = 240\n'
            f"[segment]\nchunk_seconds = {CHUNK_S}\n[spool]\nreserve_mb = 0\n"
            "[sim]\nenabled = false\n[mcu]\nenabled = false\n")
    for b in bands:
        text += (f'[[wrist]]\nname = "{b.name}"\naddress = "{b.address}"\n'
                 f'profile = "{b.profile}"\nrate_hz = {b.rate_hz:g}\n')
    cfgfile = tmp / f"wrist{i}.toml"
    cfgfile.write_text(text)
    spool = tmp / f"wspool{i}"
    with SimRig(cfg) as rig:  # the bands live here: they outlive the killed agent
        notify = Notify(tmp)
        p = spawn(["-m", "agent", "run", "--config", str(cfgfile), "--spool", str(spool)],
                  tmp, notify)
        try:
            assert notify.wait_for("READY=1"), p.stderr.read() if p.poll() is not None else ""
            deadline = time.monotonic() + 60
            while any(rig.stats(b.name)["first_sample"] is None for b in bands):
                assert time.monotonic() < deadline, "bands never streamed"
                time.sleep(0.1)
            time.sleep(run_s)
            kill_ns = time.monotonic_ns()
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=30)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            assert p.stdout is not None and p.stderr is not None
            p.stdout.close()
            p.stderr.close()
            notify.close()
        sent = {b.name: rig.fault(b.name, f"delivered {kill_ns}") for b in bands}
        results = recover_all(Spool(spool, "sim-0001"))
        assert [r.outcome for r in results] == ["sealed"], results
        (path,) = (spool / "sealed").glob("*.mcap")
        stored, counted, last_frame = _read_streams(path)
        assert last_frame is not None
        cut = last_frame - int(LAG_S * 1e9)
        by_video = {b.name: rig.fault(b.name, f"delivered {cut}") for b in bands}
    loss: dict[str, float] = {}
    lag: dict[str, float] = {}
    for b in bands:
        topic = f"/wrist/{b.name}/imu"
        on_disk = stored.get(topic, 0) + counted.get(topic, 0)
        first = sent[b.name]["first_sample"]
        took = sent[b.name]["last_sample"] - first + 1
        key = f"{b.name}:{b.profile}"
        loss[key] = max(took - on_disk, 0) / b.rate_hz
        upto = by_video[b.name]["last_sample"]
        lag[key] = max((upto - first + 1 if upto is not None else 0) - on_disk, 0) / b.rate_hz
    loss["camera (upper bound: kill - last frame)"] = (kill_ns - last_frame) / 1e9
    return loss, lag


def test_kill9_loses_at_most_a_chunk_of_each_wrist_stream(tmp_path, long_run):
    from agent.sim.bluez import missing_tools

    if missing_tools():
        pytest.skip(f"needs {missing_tools()}")
    rng = random.Random(11)
    trials = 24 if long_run else 2
    worst: dict[str, float] = {}
    worst_lag: dict[str, float] = {}
    lines = []
    for i in range(trials):
        pair = PAIRS[i % len(PAIRS)]
        loss, lag = wrist_kill_trial(tmp_path, i, pair, 1.0 + rng.random() * 2.0)
        lines.append(f"  trial {i}: " + ", ".join(f"{k} {v:.3f} s" for k, v in loss.items()))
        for k, v in loss.items():
            worst[k] = max(worst.get(k, 0.0), v)
        for k, v in lag.items():
            worst_lag[k] = max(worst_lag.get(k, 0.0), v)
    print(f"\nkill -9 trials: {trials}; seconds of each stream lost at the kill\n"
          + "\n".join(lines) + "\nworst loss per stream: "
          + ", ".join(f"{k} {v:.3f} s" for k, v in sorted(worst.items()))
          + f"\nworst lag behind the video on disk (beyond {LAG_S:g} s): "
          + ", ".join(f"{k} {v:.3f} s" for k, v in sorted(worst_lag.items())))

    # No wrist stream on disk ends earlier than the video beside it (what the issue saw: the
    # last IMU batch a chunk older than the last frame). This holds on a loaded machine too.
    behind = {k: v for k, v in worst_lag.items() if v > 0.0}
    assert not behind, f"a wrist stream on disk ends before the video: {behind}"
    if long_run:  # the figure itself depends on scheduling: checked in the long run only
        over = {k: v for k, v in worst.items()
                if not k.startswith("camera") and v > BOUND_S}
        assert not over, f"lost more than {BOUND_S:.1f} s of a stream: {over}"

