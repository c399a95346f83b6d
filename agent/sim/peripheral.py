"""A simulated wrist band: a GATT peripheral on one adapter of the private BlueZ.

    python -m agent.sim.peripheral --adapter hci1 --central hci0 --profile wearcap-open \
        --rate 200 --seed 1 --control /tmp/x/left.sock [--drop-every 60] [--abort-connects 2]
        [--refuse gyro] [--drop-partial-at-stop] [--info-scales ACC GYRO]
        [--profile-version 1] [--write-latency-ms 2] [--notify-latency-ms 0.4]
        [--latency-ms 1.2] [--notify-path acquire|start|silent-acquire]

It registers a GATT application (the profile's service with its notify and control
characteristics) and an LE advertisement with dbus-fast, prints ``ready <address>`` on
stdout, then serves the band's packets as notifications, batched per simulated connection
event, while a central is subscribed: through the socket of ``AcquireNotify`` when the central
acquired it, else as ``PropertiesChanged`` on ``Value`` (``--notify-path``: what the band's
characteristics offer, see ``agent.sim.gatt_objects``; default ``acquire``, both, as BlueZ
offers them). ``--latency-ms``
holds every notification that long after its connection event: a host's transport latency
(controller, HCI, kernel), on top of what the private bus itself takes, which no one knows
(wearcap calibrate measures the sum; the rig's ground truth scores it). Every control write
is answered on the control characteristic (``agent.wrist.control``): a refused stream
(``--refuse``) is answered "not supported" and never sent. At the stop command the band stops
sampling and sends what it holds, its partial frame too (unless ``--drop-partial-at-stop``).

Scripted faults (flags, or one line on the control socket; every command answers one JSON
line): ``drop`` (link lost mid-stream), ``abort N`` (drop the next N connections while they
are being set up), ``vanish S`` (drop, stop advertising and serving for S seconds),
``firmware`` (drop, then come back with a changed GATT layout), ``malformed N`` (send N
garbage notifications), ``shake S`` (the wearer shakes the band for S seconds: large
acceleration, so provisioning can tell which band moved), ``tap [T]`` (the band is tapped
against the head mount at host time T ns, default now: a sharp shock, for wearcap
calibrate), ``notify-path P`` (what the characteristics offer from the next registration
on, which follows every disconnect; at once if no central is connected), ``stats`` (what was
delivered and dropped, ``socket_packets`` of them through a socket the central acquired),
``delivered T`` (the true number of the last sample sent by host time T, for crash
harnesses).

The exported D-Bus objects live in ``agent.sim.gatt_objects``.

A dropped link is simulated the way the central experiences it: the central's BlueZ device
object is told the link is gone (``Device1.Disconnect`` on the central's view of this band).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import sys
import time
from typing import Any

from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.service import ServiceInterface

from agent.sim.band_feed import Feed, make_feed
from agent.sim.gatt_objects import (
    NOTIFY_PATHS,
    AcquiringCharacteristic,
    Advertisement,
    Characteristic,
    Service,
    characteristic,
)

APP_ROOT = "/org/wearcap/band"
ADV_PATH = "/org/wearcap/adv0"


class Band:
    """One simulated band on the bus: GATT app, advertisement, streaming, faults."""

    def __init__(self, bus: MessageBus, args: argparse.Namespace, feed: Feed) -> None:
        self.bus = bus
        self.args = args
        self.feed = feed
        self.adapter_path = f"/org/bluez/{args.adapter}"
        self.address = ""
        self.central_dev = ""
        self.layout = 0  # bumped by a "firmware update"
        self.exported: list[tuple[str, ServiceInterface]] = []
        self.notify_char: Characteristic | None = None
        self.control_char: Characteristic | None = None
        self.started = False
        self.connected = False
        self.abort_left = args.abort_connects
        self.malformed_left = 0
        self.away_until = 0.0
        self.stats: dict[str, Any] = {"packets": 0, "samples": 0, "stop_samples": 0,
                                      "time_replies": 0,
                                      "dropped_samples": 0,
                                      "malformed_sent": 0, "connections": 0, "faults": [],
                                      "socket_packets": 0, "notify_path": args.notify_path,
                                      "first_sample": None, "last_sample": None}
        self.rng = random.Random(args.seed)
        self.delivered: collections.deque[tuple[int, int]] = collections.deque(maxlen=8192)
        """(host ns just before a batch of notifications, true number of its last sample)"""
        self.app_path = APP_ROOT
        self.generation = 0
        self.registered = False
        self.lock = asyncio.Lock()

    # ------------------------------------------------------------ D-Bus plumbing

    async def call(self, path: str, interface: str, member: str, signature: str = "",
                   body: list[Any] | None = None, destination: str = "org.bluez") -> Any:
        reply = await self.bus.call(Message(destination=destination, path=path,
                                            interface=interface, member=member,
                                            signature=signature, body=body or []))
        if reply is None or reply.message_type == MessageType.ERROR:
            err = reply.error_name if reply is not None else "no reply"
            raise RuntimeError(f"{interface}.{member} on {path}: {err} {reply and reply.body}")
        return reply.body

    async def setup(self) -> None:
        body = await self.call(self.adapter_path, "org.freedesktop.DBus.Properties", "Get",
                               "ss", ["org.bluez.Adapter1", "Address"])
        self.address = body[0].value
        self.central_dev = (f"/org/bluez/{self.args.central}/dev_"
                            f"{self.address.replace(':', '_')}")
        await self.bus.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus", member="AddMatch", signature="s",
            body=[f"type='signal',sender='org.bluez',path='{self.central_dev}',"
                  "interface='org.freedesktop.DBus.Properties',member='PropertiesChanged'"]))
        self.bus.add_message_handler(self._on_signal)
        await self.register()

    def _on_signal(self, msg: Message) -> None:
        if msg.message_type != MessageType.SIGNAL or msg.path != self.central_dev:
            return
        if msg.member != "PropertiesChanged" or msg.body[0] != "org.bluez.Device1":
            return
        changed = msg.body[1]
        if "Connected" in changed:
            connected = bool(changed["Connected"].value)
            if connected and not self.connected:
                self.connected = True
                self.stats["connections"] += 1
                if self.abort_left > 0:
                    self.abort_left -= 1
                    self._fault("abort")
                    asyncio.get_running_loop().create_task(self.drop())
            elif not connected and self.connected:
                self.connected = False
                self._stop_stream()
                asyncio.get_running_loop().create_task(self.after_disconnect())

    async def register(self) -> None:
        """Export and register the GATT application (new handles each time) and advert."""
        async with self.lock:
            await self._unregister()
            self.generation += 1
            layout = self.args.layouts[self.layout % len(self.args.layouts)]
            self.app_path = f"{APP_ROOT}{self.generation}"
            for i, (svc_uuid, chars) in enumerate(layout):
                spath = f"{self.app_path}/service{i}"
                self.exported.append((spath, Service(svc_uuid)))
                for j, (uuid, flags) in enumerate(chars):
                    ch = characteristic(self, uuid, spath, flags, self.args.notify_path)
                    self.exported.append((f"{spath}/char{j}", ch))
                    if uuid == self.args.notify_uuid:
                        self.notify_char = ch
                    elif uuid == self.args.control_uuid:
                        self.control_char = ch
                    elif uuid == self.args.info_uuid:
                        ch.value = self.feed.info()
            for path, obj in self.exported:
                self.bus.export(path, obj)
            self.bus.export(ADV_PATH, self.adv)
            await self.call(self.adapter_path, "org.bluez.GattManager1",
                            "RegisterApplication", "oa{sv}", [self.app_path, {}])
            await self.call(self.adapter_path, "org.bluez.LEAdvertisingManager1",
                            "RegisterAdvertisement", "oa{sv}", [ADV_PATH, {}])
            self.registered = True

    async def unregister(self) -> None:
        async with self.lock:
            await self._unregister()

    async def _unregister(self) -> None:
        if self.registered:
            with contextlib.suppress(RuntimeError):
                await self.call(self.adapter_path, "org.bluez.LEAdvertisingManager1",
                                "UnregisterAdvertisement", "o", [ADV_PATH])
            with contextlib.suppress(RuntimeError):
                await self.call(self.adapter_path, "org.bluez.GattManager1",
                                "UnregisterApplication", "o", [self.app_path])
            self.bus.unexport(ADV_PATH)
        for path, _obj in self.exported:
            self.bus.unexport(path)
        self.exported = []
        self.notify_char = self.control_char = None
        self.registered = False

    async def after_disconnect(self) -> None:
        """The simulated BlueZ keeps a disconnected central's GATT objects at the old
        handles, so a band serves a fresh registration (new handles) to every connection."""
        if not self.away_until:
            await self.register()

    @property
    def adv(self) -> Advertisement:
        if not hasattr(self, "_adv"):
            self._adv = Advertisement(self.args.name, [self.args.service_uuid])
        return self._adv

    # ------------------------------------------------------------ GATT events

    def on_write(self, uuid: str, value: bytes) -> None:
        if value[:1] == b"\x04" and uuid == self.args.control_uuid:
            asyncio.get_running_loop().create_task(self._time_exchange(value))
            return
        cmd = self.feed.control(value)
        if cmd == "start":
            self._start_stream()
        elif cmd == "stop":
            self._stop_on_command()
        reply = self.feed.reply(value)
        ctl = self.control_char
        if reply is not None and ctl is not None and ctl.notifying:
            ctl.notify(reply)

    async def _time_exchange(self, value: bytes) -> None:
        """A time request: the write takes the radio's host-to-band latency to arrive, the
        band reads its clock then, and the reply takes the (different) band-to-host
        latency: the two directions are asymmetric, as on a real link."""
        a = self.args
        await asyncio.sleep((a.write_latency_ms + self.rng.expovariate(1 / a.jitter_ms)) / 1e3)
        rx = time.monotonic_ns()
        await asyncio.sleep(0.0002)  # the band handles it and packs the reply
        reply = self.feed.time_reply(value, rx, time.monotonic_ns())
        await asyncio.sleep((a.notify_latency_ms + self.rng.expovariate(1 / a.jitter_ms)) / 1e3)
        ctl = self.control_char
        if reply is not None and ctl is not None and ctl.notifying:
            self.stats["time_replies"] += 1
            ctl.notify(reply)

    def _stop_on_command(self) -> None:
        """The host's stop command: the band stops sampling and sends what it still holds
        (its partial frame too, unless ``--drop-partial-at-stop``), then stops."""
        char = self.notify_char
        if self.started and char is not None:
            held = self.feed.stop(time.monotonic_ns())
            self._log_delivery(held)
            for _host_ns, packet, n in held:
                char.notify(packet)
                self.stats["packets"] += 1
                self.stats["stop_samples"] += n
            self.stats["socket_packets"] += len(held) * _through_socket(char)
            span = getattr(self.feed, "last_span", None)
            if span is not None:
                self.stats["last_sample"] = span[1]
        self._stop_stream()

    def on_notify(self, uuid: str, on: bool) -> None:
        if uuid != self.args.notify_uuid:
            return
        if on and not self.feed.needs_start_command:
            self._start_stream()
        elif not on:
            self._stop_stream()

    def _start_stream(self) -> None:
        if not self.started and self.notify_char is not None and self.notify_char.notifying:
            self.started = True
            self.feed.skip_until(time.monotonic_ns())

    def _stop_stream(self) -> None:
        self.started = False
        if self.notify_char is not None:
            self.notify_char.set_notifying(False)

    def _log_delivery(self, deliveries: list[tuple[int, bytes, int]]) -> None:
        span = getattr(self.feed, "last_span", None)
        if deliveries and span is not None:
            self.delivered.append((time.monotonic_ns(), span[1]))

    def delivered_by(self, host_ns: int) -> int | None:
        """The true number of the last sample sent at or before ``host_ns``."""
        last = None
        for t, k in self.delivered:
            if t > host_ns:
                break
            last = k
        return last

    def _fault(self, kind: str) -> None:
        self.stats["faults"].append({"kind": kind, "host_ns": time.monotonic_ns()})

    # ------------------------------------------------------------ faults

    async def drop(self) -> None:
        """The link is lost: stop sending, then tell the central's BlueZ."""
        self._stop_stream()
        with contextlib.suppress(RuntimeError):
            await self.call(self.central_dev, "org.bluez.Device1", "Disconnect")

    async def command(self, line: str) -> dict[str, Any]:
        words = line.split()
        if not words:
            return {"ok": False, "error": "empty command"}
        cmd, rest = words[0], words[1:]
        if cmd == "stats":
            model = getattr(self.feed, "model", None)
            truth = None if model is None else {  # sample k was taken at start + phase + k*P
                "start_ns": model.start, "phase_ns": model.phase,
                "period_ns": model.period_host, "first_sample": self.stats["first_sample"],
                # the band clock: device_at(t) = offset + (t - start) (1 + drift) + wander
                "clock": {"offset_ns": model.p.offset_ns, "drift_ppm": model.p.drift_ppm,
                          "wander_amp_ns": model._wander_amp,
                          "wander_period_s": model.p.wander_period_s}}
            return {"ok": True, **self.stats, "address": self.address,
                    "streaming": self.started, "connected": self.connected, "truth": truth}
        if cmd == "delivered":  # delivered T: the last sample sent by host time T (ns)
            return {"ok": True, "last_sample": self.delivered_by(int(rest[0])),
                    "first_sample": self.stats["first_sample"]}
        if cmd == "drop":
            self._fault("drop")
            await self.drop()
        elif cmd == "abort":
            self.abort_left += int(rest[0]) if rest else 1
        elif cmd == "malformed":
            self.malformed_left += int(rest[0]) if rest else 1
        elif cmd == "vanish":
            self._fault("vanish")
            self.away_until = time.monotonic() + (float(rest[0]) if rest else 5.0)
            await self.drop()
            await self.unregister()
        elif cmd == "shake":  # the wearer shakes the band for S seconds (default 3)
            model = getattr(self.feed, "model", None)
            if model is None:
                return {"ok": False, "error": "this feed has no motion to shake"}
            now = time.monotonic_ns()
            model.shake(now, now + int((float(rest[0]) if rest else 3.0) * 1e9))
        elif cmd == "tap":  # tap T: tapped against the head mount at host time T (ns)
            model = getattr(self.feed, "model", None)
            if model is None:
                return {"ok": False, "error": "this feed has no motion to tap"}
            model.tap(int(rest[0]) if rest else time.monotonic_ns())
        elif cmd == "notify-path":
            if not rest or rest[0] not in NOTIFY_PATHS:
                return {"ok": False, "error": f"notify-path takes one of {NOTIFY_PATHS}"}
            self.args.notify_path = self.stats["notify_path"] = rest[0]
            if not self.connected:
                await self.register()
        elif cmd == "firmware":
            self._fault("firmware")
            self.layout += 1
            was_connected = self.connected
            await self.drop()
            if not was_connected:
                await self.register()
        else:
            return {"ok": False, "error": f"unknown command {cmd!r}"}
        return {"ok": True}

    # ------------------------------------------------------------ streaming

    async def stream(self) -> None:
        next_drop = self.args.drop_every
        streamed = 0.0
        lat = round(self.args.latency_ms * 1e6)
        while True:
            now_ns = time.monotonic_ns()
            if self.away_until and time.monotonic() >= self.away_until:
                self.away_until = 0.0
                await self.register()
            deliveries = self.feed.deliveries_until(now_ns - lat)
            char = self.notify_char
            if self.started and char is not None:
                self._log_delivery(deliveries)
                for _host_ns, packet, n in deliveries:
                    char.notify(packet)
                    self.stats["packets"] += 1
                    self.stats["samples"] += n
                self.stats["socket_packets"] += len(deliveries) * _through_socket(char)
                span = getattr(self.feed, "last_span", None)
                if deliveries and span is not None:  # true sample numbers sent (a model band)
                    if self.stats["first_sample"] is None:
                        self.stats["first_sample"] = span[0]
                    self.stats["last_sample"] = span[1]
                while self.malformed_left > 0:
                    self.malformed_left -= 1
                    self.stats["malformed_sent"] += 1
                    junk = self.feed.garbage()
                    if not junk and _relayed(char):
                        # the simulated BlueZ serves a StartNotify from the socket it
                        # acquired, and takes an empty packet there for its hang-up; BlueZ
                        # carries an empty notification as a signal
                        junk = b"\x00"
                    char.notify(junk)
            else:
                self.stats["dropped_samples"] += sum(n for _h, _p, n in deliveries)
            wait = self.feed.next_event_ns() + lat - time.monotonic_ns()
            await asyncio.sleep(max(wait, 0) / 1e9)
            if self.started:
                streamed += max(wait, 0) / 1e9
                if next_drop and streamed >= next_drop:
                    streamed = 0.0
                    self._fault("drop")
                    await self.drop()


def _relayed(char: Characteristic) -> bool:
    """Whether ``char``'s notifications go into a socket the simulated BlueZ acquired to serve
    a central's StartNotify."""
    return (isinstance(char, AcquiringCharacteristic) and char.sock is not None
            and not char.for_central)


def _through_socket(char: Characteristic) -> int:
    """1 if ``char``'s notifications go into a socket the central acquired, that delivers."""
    return int(isinstance(char, AcquiringCharacteristic) and char.sock is not None
               and char.for_central and char.deliver)


async def serve_control(band: Band, path: str) -> asyncio.AbstractServer:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    reply = await band.command(line.decode().strip())
                except Exception as exc:  # a bad command must not kill the band
                    reply = {"ok": False, "error": str(exc)}
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        finally:
            writer.close()

    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return await asyncio.start_unix_server(handle, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m agent.sim.peripheral", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--adapter", required=True, help="this band's adapter, e.g. hci1")
    p.add_argument("--central", default="hci0", help="the agent's adapter")
    p.add_argument("--profile", default="wearcap-open")
    p.add_argument("--name", default="wearcap-band")
    p.add_argument("--rate", type=float, default=200.0, help="nominal sample rate (Hz)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--drift-ppm", type=float, default=50.0)
    p.add_argument("--interval-ms", type=float, nargs=2, default=[7.5, 50.0])
    p.add_argument("--control", help="path of the control socket")
    p.add_argument("--drop-every", type=float, default=0.0,
                   help="drop the link after every S seconds of streaming (0: never)")
    p.add_argument("--abort-connects", type=int, default=0,
                   help="drop the first N connections while they are being set up")
    p.add_argument("--refuse", action="append", default=[], metavar="STREAM",
                   help='answer "not supported" to starting STREAM (e.g. gyro) and never '
                   "send it")
    p.add_argument("--drop-partial-at-stop", action="store_true",
                   help="at stop, throw away the samples of the frame being filled")
    p.add_argument("--info-scales", type=float, nargs=2, metavar=("ACC", "GYRO"),
                   help="the scales the info characteristic reports (open profile)")
    p.add_argument("--profile-version", type=int, default=2,
                   help="open profile version the firmware implements (1: no control "
                   "replies, no time exchange)")
    p.add_argument("--write-latency-ms", type=float, default=2.0,
                   help="host-to-band latency of a time request (beyond the bus's own)")
    p.add_argument("--notify-latency-ms", type=float, default=0.4,
                   help="band-to-host latency of its reply (beyond the bus's own)")
    p.add_argument("--latency-ms", type=float, default=0.0,
                   help="hold each notification this long after its connection event "
                   "(transport latency, on top of the bus's own)")
    p.add_argument("--notify-path", choices=NOTIFY_PATHS, default="acquire",
                   help="how the notify characteristics deliver: acquire (AcquireNotify "
                   "and StartNotify, as BlueZ offers them), start (StartNotify only), "
                   "silent-acquire (AcquireNotify is accepted and delivers nothing)")
    p.add_argument("--jitter-ms", type=float, default=0.3,
                   help="mean of the exponential jitter added to each direction")
    return p.parse_args(argv)


async def amain(args: argparse.Namespace) -> None:
    band_opts: dict[str, Any] = {}
    if args.profile != "counter":
        band_opts = {"refuse": frozenset(args.refuse),
                     "send_partial": not args.drop_partial_at_stop,
                     "info_scales": tuple(args.info_scales) if args.info_scales else None,
                     "version": args.profile_version}
    feed = make_feed(args.profile, rate_hz=args.rate, seed=args.seed,
                     drift_ppm=args.drift_ppm, interval_ms=tuple(args.interval_ms),
                     **band_opts)
    layout = feed.layout()
    args.service_uuid = layout.service_uuid
    args.notify_uuid = layout.notify_uuid
    args.control_uuid = layout.control_uuid
    args.info_uuid = getattr(getattr(feed, "profile", None), "info_uuid", None)
    args.layouts = layout.variants
    bus = await MessageBus(bus_type=BusType.SYSTEM, negotiate_unix_fd=True).connect()
    band = Band(bus, args, feed)
    await band.setup()
    server = await serve_control(band, args.control) if args.control else None
    print(f"ready {band.address}", flush=True)
    try:
        await band.stream()
    finally:
        if server is not None:
            server.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(amain(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
