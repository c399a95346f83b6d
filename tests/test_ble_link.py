"""bleak's real BlueZ code against simulated bands on a private BlueZ: streaming, disconnects,
aborted connects, a changed GATT layout and malformed notifications; data notifications
through AcquireNotify's socket, and the fallbacks to StartNotify."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agent import config
from agent.sim.bluez import missing_tools
from agent.sim.rig import SimRig
from agent.sources import GAP_TOPIC, Message
from agent.wrist.ble import BackoffPolicy
from agent.wrist.imu_batch import decode_payload
from agent.wrist.source import WristSource

pytestmark = pytest.mark.skipif(bool(missing_tools()), reason=f"needs {missing_tools()}")
FAST = BackoffPolicy(first_s=0.1, cap_s=1.0)


@pytest.fixture(scope="module")
def rig() -> Iterator[SimRig]:
    cfg = config.load_default(config.find_profile("sim", "<test>"))
    with SimRig(cfg) as r:
        yield r


class Run:
    """A WristSource on one simulated band, drained like the writer does."""

    def __init__(self, rig: SimRig, name: str, band_changes: dict[str, Any] | None = None,
                 **source_args: Any) -> None:
        band = next(w for w in rig.cfg.wrist if w.name == name)
        band = dataclasses.replace(band, **(band_changes or {}))
        self.rig, self.name = rig, name
        self.src = WristSource(band, rig.cfg.ble, policy=FAST, **source_args)
        self.msgs: list[Message] = []
        self.base = rig.stats(name)  # band counters are cumulative over the module
        self.src.start()

    def until(self, pred: Callable[[], bool], limit: float = 30.0) -> None:
        deadline = time.monotonic() + limit
        while not pred():
            assert time.monotonic() < deadline, f"gave up waiting; status {self.src.status()}"
            self.msgs += self.src.drain()
            time.sleep(0.05)
        self.msgs += self.src.drain()

    def streaming_samples(self, n: int) -> None:
        start = self.src.stats["samples"]
        self.until(lambda: self.src.stats["samples"] >= start + n)

    def stop(self) -> dict:
        """Stop; what the band did during this run."""
        self.src.stop()
        self.msgs += self.src.drain()
        now = self.rig.stats(self.name)
        delta = {k: now[k] - self.base[k]
                 for k in ("samples", "stop_samples", "connections", "malformed_sent")}
        # Every sample the band numbered from the first one heard to the last it sent is
        # written or counted in a gap, exactly: at stop too, where these bands reply with
        # next_seq, the seq after their last sample (docs/wrist-profile.md).
        got = self.src.stats["samples"]
        delta.pop("stop_samples")
        chunks = [(int(q), int(n)) for p in self.imu()
                  for q, n in zip(decode_payload(p)["chunks"]["seq"], p["chunk_n"], strict=True)]
        stop = [g for g in self.all_gaps() if g["cause"].startswith("stop:")]
        if any("did not reply to the stop command" in g["cause"] for g in stop):
            # the reply did not come in time (a loaded machine): the end is judged from time
            # alone, which cannot tell two samples from mapping error; the cause says so
            assert now["last_sample"] + 1 - max(q + n for q, n in chunks) <= 2 or any(
                g["lost"] == -1 for g in stop), stop
        else:
            at_stop = sum(g["lost"] for g in stop if g["lost"] > 0)
            assert max(q + n for q, n in chunks) + at_stop == now["last_sample"] + 1, stop
            counted = sum(g["lost"] for g in self.gaps() if g["lost"] > 0) + at_stop
            first = min(q for q, _n in chunks)
            assert got + counted == now["last_sample"] + 1 - first
        delta["samples"] = got
        return {**delta, "faults": now["faults"][len(self.base["faults"]):]}

    def gaps(self) -> list[dict]:
        """Gaps after the band first streamed (the time to connect is a gap of its own)."""
        return [g for g in self.all_gaps()
                if not g["cause"].startswith(("not-connected:", "stop:"))]

    def begin_gaps(self) -> list[dict]:
        """Gaps but the stop's (those Run.stop checks against the band's own count)."""
        return [g for g in self.all_gaps() if not g["cause"].startswith("stop:")]

    def all_gaps(self) -> list[dict]:
        return [m.payload for m in self.msgs if m.topic == GAP_TOPIC]

    def imu(self) -> list[dict]:
        return [m.payload for m in self.msgs if m.topic.endswith("/imu")]


def _indices(payloads: list[dict]) -> list[int]:
    return [int(i) for p in payloads for i in decode_payload(p)["index"]]


def test_discovers_connects_and_streams_without_gaps(rig):
    run = Run(rig, "left")
    run.streaming_samples(400)
    delivered = run.stop()
    assert run.src.stats["samples"] == delivered["samples"]
    idx = _indices(run.imu())
    assert len(idx) == delivered["samples"]
    assert idx == list(range(idx[0], idx[0] + len(idx)))  # no sample missing or repeated
    assert run.gaps() == []
    (start,) = run.begin_gaps()  # the time it took to connect is not hidden
    assert start["cause"] == "not-connected:connecting" and start["lost"] == -1
    first_arrival = min(int(a) for p in run.imu()
                        for a in decode_payload(p)["chunks"]["arrival_ns"])
    assert start["start_ns"] < start["end_ns"] == first_arrival
    assert first_arrival % 1000 == 0  # the link stamps arrivals in whole us
    assert run.src.status()["state"] == "stopped"


def test_forced_disconnect_is_reconnected_and_recorded_as_a_gap(rig):
    run = Run(rig, "right")
    run.streaming_samples(100)
    t_before = time.monotonic_ns()
    rig.fault("right", "drop")
    run.until(lambda: run.src.status()["reconnects"] >= 1)
    run.streaming_samples(100)
    delivered = run.stop()
    assert run.src.stats["samples"] == delivered["samples"]
    (gap,) = run.gaps()
    assert gap["cause"] == "disconnect:link-lost"
    fault_ns = delivered["faults"][-1]["host_ns"]
    assert t_before <= fault_ns <= gap["end_ns"] and gap["start_ns"] < gap["end_ns"]
    assert gap["lost"] > 0  # the band kept sampling while the link was down
    idx = _indices(run.imu())  # the samples missing are exactly those the gap says were lost
    assert [b - a - 1 for a, b in itertools.pairwise(idx) if b != a + 1] == [gap["lost"]]


def test_aborted_connects_are_retried(rig):
    run = Run(rig, "left")
    run.streaming_samples(50)
    rig.fault("left", "abort 2")
    rig.fault("left", "drop")
    run.until(lambda: run.src.status()["reconnects"] >= 1)
    run.streaming_samples(50)
    delivered = run.stop()
    assert delivered["connections"] >= 4  # first, two aborted, then one that streams
    assert [f["kind"] for f in delivered["faults"]] == ["drop", "abort", "abort"]
    assert run.src.stats["samples"] == delivered["samples"]


def test_changed_gatt_layout_clears_the_cache_and_reconnects(rig):
    run = Run(rig, "right")
    run.streaming_samples(50)
    rig.fault("right", "firmware")
    run.until(lambda: run.src.status()["reconnects"] >= 1)
    run.streaming_samples(50)
    delivered = run.stop()
    st = run.src.status()
    assert st["cache_clears"] >= 1
    assert run.src.stats["samples"] == delivered["samples"]
    assert [g["cause"] for g in run.gaps()] == ["disconnect:link-lost"]


def test_malformed_notifications_are_counted_and_skipped(rig):
    run = Run(rig, "left")
    run.streaming_samples(50)
    rig.fault("left", "malformed 7")
    run.until(lambda: run.src.status()["malformed"] >= 7)
    run.streaming_samples(50)
    delivered = run.stop()
    assert run.src.status()["malformed"] == delivered["malformed_sent"] == 7
    assert run.src.stats["samples"] == delivered["samples"]
    assert run.gaps() == []


def test_two_bands_starting_together_share_one_ble_loop_and_both_stream(rig):
    """Each band used to run its own loop, hence its own view of BlueZ; the second view,
    set up while the first band's scan made BlueZ add the devices, could lose them, and that
    band never recorded. One loop per process means one view, set up once."""
    from bleak.backends.bluezdbus.manager import _global_instances

    from agent.wrist import ble_loop

    runs = [Run(rig, "left"), Run(rig, "right")]
    shared = ble_loop.current()
    assert shared is not None and shared.users == 2
    for r in runs:
        r.streaming_samples(50)
    live = [m for loop, m in _global_instances.items() if not loop.is_closed()]
    assert list(_global_instances).count(shared.loop) == 1 and len(live) == 1
    for r in runs:
        delivered = r.stop()
        assert r.src.stats["samples"] == delivered["samples"] > 0
    assert ble_loop.current() is None and shared.loop.is_closed()  # the last user closed it


def test_a_band_lost_from_the_ble_librarys_view_is_found_again(rig):
    """The state the start-up race leaves: BlueZ lists the band, bleak's cache does not, so
    no scan ever reports it. The link notices after one scan and has BlueZ announce it anew."""
    import asyncio

    from bleak import BleakScanner
    from bleak.backends.bluezdbus.manager import get_global_bluez_manager

    from agent.wrist import ble_loop
    from agent.wrist.bluez_dbus import has_device as bluez_has_device

    address = rig.band("left").address
    path = f"/org/bluez/hci0/dev_{address.replace(':', '_')}"

    async def lose_it() -> bool:
        manager = await get_global_bluez_manager()
        for _ in range(40):  # BlueZ lists the band once any scan has seen it
            if await bluez_has_device("hci0", address):
                break
            async with BleakScanner(bluez={"adapter": "hci0"}):
                await asyncio.sleep(0.25)
        manager._properties.pop(path, None)
        return await bluez_has_device("hci0", address)

    shared = ble_loop.acquire()
    try:
        assert shared.submit(lose_it()).result(30)
        run = Run(rig, "left", scan_timeout=1.0)
        run.streaming_samples(50)
        delivered = run.stop()
    finally:
        ble_loop.release(shared)
    assert run.src.stats["view_heals"] == 1
    assert run.src.stats["samples"] == delivered["samples"] > 0
    (start,) = run.begin_gaps()
    assert start["cause"] == "not-connected:not-found"  # the failed scan is in the gap


def test_a_band_that_vanishes_and_returns_is_one_gap_with_its_cause(rig):
    away_s = 2.0
    run = Run(rig, "right")
    run.streaming_samples(100)
    rig.fault("right", f"vanish {away_s:g}")
    run.until(lambda: run.src.status()["reconnects"] >= 1)
    run.streaming_samples(100)
    delivered = run.stop()
    assert run.src.stats["samples"] == delivered["samples"]
    assert delivered["faults"][-1]["kind"] == "vanish"
    (gap,) = run.gaps()
    assert gap["cause"] == "disconnect:link-lost"
    assert delivered["faults"][-1]["host_ns"] <= gap["end_ns"]
    # the band sampled on, unheard, for the whole absence: at 200 Hz that is >= 390 samples
    assert gap["lost"] >= int(away_s * 200 * 0.975)
    idx = _indices(run.imu())
    assert [b - a - 1 for a, b in itertools.pairwise(idx) if b != a + 1] == [gap["lost"]]


# ---------------------------------------------------------------- the notify path


@contextlib.contextmanager
def _band_offers(rig: SimRig, name: str, path: str) -> Iterator[None]:
    """The band's characteristics offer ``path`` (agent.sim.gatt_objects) while active."""
    assert rig.fault(name, f"notify-path {path}")["ok"]
    try:
        yield
    finally:
        rig.fault(name, "notify-path acquire")


def test_data_comes_through_acquire_notify_and_a_dropped_link_reconnects(rig):
    before = rig.stats("right")["socket_packets"]
    run = Run(rig, "right", band_changes={"notify": "acquire"})
    run.streaming_samples(100)
    st = run.src.status()
    assert (st["notify_path"], st["notify_fallback"]) == ("acquire-notify", "")
    assert run.src.segment_metadata()["notify_path"] == "acquire-notify"
    rig.fault("right", "drop")  # the band's end of the socket closes: bleak sees a hang-up
    run.until(lambda: run.src.status()["reconnects"] >= 1)
    run.streaming_samples(100)
    assert run.src.status()["notify_path"] == "acquire-notify"
    delivered = run.stop()
    assert run.src.stats["samples"] == delivered["samples"]
    assert [g["cause"] for g in run.gaps()] == ["disconnect:link-lost"]
    # the band's side: what it sent went through the socket, not as D-Bus signals
    sent = rig.stats("right")
    assert sent["socket_packets"] - before == sent["packets"] - run.base["packets"] > 0


def test_a_band_without_acquire_notify_is_read_with_start_notify(rig):
    with _band_offers(rig, "left", "start"):
        before = rig.stats("left")["socket_packets"]
        run = Run(rig, "left", band_changes={"notify": "acquire"})
        run.streaming_samples(200)
        st = run.src.status()
        delivered = run.stop()
    assert st["notify_path"] == "start-notify"
    assert st["notify_fallback"].startswith("acquire-failed: ")  # why, as the link saw it
    assert rig.stats("left")["socket_packets"] == before
    assert run.src.stats["samples"] == delivered["samples"]
    assert run.gaps() == []


def test_acquire_notify_that_delivers_nothing_falls_back_to_start_notify(rig, monkeypatch):
    from agent.wrist import ble

    monkeypatch.setattr(ble, "ACQUIRE_SILENT_S", 1.5)
    with _band_offers(rig, "left", "silent-acquire"):
        run = Run(rig, "left", band_changes={"notify": "acquire"})
        run.streaming_samples(200)
        st = run.src.status()
        assert (st["notify_path"], st["notify_fallback"]) == ("start-notify", "acquire-silent")
        meta = run.src.segment_metadata()
        assert (meta["notify_path"], meta["notify_fallback"]) == ("start-notify",
                                                                 "acquire-silent")
        rig.fault("left", "drop")  # the fallback holds for the run: no second silent wait
        run.until(lambda: run.src.status()["reconnects"] >= 2)
        run.streaming_samples(100)
        assert run.src.status()["notify_path"] == "start-notify"
        delivered = run.stop()
    assert delivered["connections"] >= 3
    assert run.src.stats["samples"] == delivered["samples"]
    # the silent session is in the recording as part of the gap before the first data
    (start,) = [g for g in run.begin_gaps() if g["cause"].startswith("not-connected:")]
    assert start["end_ns"] - start["start_ns"] >= 1.5e9
    assert [g["cause"] for g in run.gaps()] == ["disconnect:link-lost"]


def test_a_two_way_band_keeps_start_notify_by_default(rig):
    """Its exchange's bound assumes the time requests (D-Bus writes) and the notifications take
    alike paths: ``auto`` leaves a two-way band's data on D-Bus though the band offers the
    socket."""
    before = rig.stats("right")["socket_packets"]
    run = Run(rig, "right")
    run.streaming_samples(100)
    st = run.src.status()
    two_way = getattr(run.src.link, "two_way", None)
    delivered = run.stop()
    assert two_way is True
    assert (st["notify_path"], st["notify_fallback"]) == ("start-notify", "")
    assert rig.stats("right")["socket_packets"] == before
    assert run.src.stats["samples"] == delivered["samples"]


def test_the_notify_key_forces_start_notify(rig):
    before = rig.stats("right")["socket_packets"]
    run = Run(rig, "right", band_changes={"notify": "start"})
    run.streaming_samples(100)
    st = run.src.status()
    delivered = run.stop()
    assert (st["notify_path"], st["notify_fallback"]) == ("start-notify", "")
    assert rig.stats("right")["socket_packets"] == before
    assert run.src.stats["samples"] == delivered["samples"]
