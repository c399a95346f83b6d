"""The BLE adapter for one wrist band: bleak + bleak-retry-connector on the shared BLE loop.

``BleLink`` connects by address on the configured adapter, checks the GATT layout against
the sensor profile, subscribes to the notify characteristic, writes the rate and start
commands, and reconnects forever with the agent's capped, jittered backoff
(``agent.backoff``). A failure's kind comes from its type and D-Bus error name
(``agent.wrist.ble_errors``), never its text. One repair serves two faults: when the
services do not match the profile (a stale BlueZ GATT cache, e.g. after a firmware update,
or BlueZ's objects gone), and when a scan does not find a band that BlueZ does list (the BLE
library's view of BlueZ lost the device object, a race in its start-up), the link has BlueZ
forget the device (``bluez_dbus.forget_device``) and finds it again on the next scan.

Its notification callback does one thing: ``on_packet(arrival_ns, bytes)`` (the caller pushes
into a ring).

How the data notifications reach it (``notify_path``, the band's ``notify`` key): with
``acquire``, and with ``auto`` for a band that does not answer the two-way time exchange,
through BlueZ's ``AcquireNotify`` where the characteristic offers it
(``NotifyAcquired``): each notification is one packet on a socket, read by bleak, with no D-Bus
message to parse per packet (``StartNotify``: one ``PropertiesChanged`` signal per
notification, parsed in Python on the BLE loop; the loop costs 0.76-0.88x as much per
notification without it, ``bench/bench_capture_threads.py --compare-notify``). A number of
devices and hosts have issues with AcquireNotify, so the link falls back to ``StartNotify``,
and keeps it for the rest of the run, when AcquireNotify fails, and when no data notification
arrives within ``ACQUIRE_SILENT_S`` of the start commands (none refused): that session ends as
``acquire-silent`` (nothing was heard, so it lies in the gap already open; the status and
segment metadata say why) and the link reconnects with StartNotify. ``start`` always uses
StartNotify, and so does ``auto`` for a two-way band (open profile v2): its exchange observes
the sum of the time request's write latency and the data notification's latency, and its
bound rests on the two being alike (``agent.clock.band.TWO_WAY_ASYMMETRY``), which holds while
both go through D-Bus; AcquireNotify takes the notifications off D-Bus and leaves the writes
on it (bleak writes through D-Bus only). ``acquire`` uses it there too, for a host where the
two were measured alike. ``notify_via`` says what the current session uses (``acquire-notify`` |
``start-notify``), ``notify_fallback`` why AcquireNotify was given up. The control point's
replies always use StartNotify: they are a few a second, and their command protocol has its own
no-reply check.

Link events (connected, with the notify path as its cause; lost, with a cause) go to
``on_event``. bleak is imported only here, inside functions, so ``import agent`` works
without it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import random
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent import backoff
from agent.errors import SourceError
from agent.timeline import Clock, monotonic_ns
from agent.wrist import bluez_dbus, registry
from agent.wrist.ble_errors import StaleGatt, classify, needs_repair
from agent.wrist.ble_loop import SharedLoop
from agent.wrist.lifecycle import Lifecycle, State
from agent.wrist.profiles import SensorProfile

if TYPE_CHECKING:
    from agent.wrist.control import Reply
    from agent.wrist.time_requests import TimeRequests
    from agent.wrist.timing import PingAimer

log = logging.getLogger(__name__)
TIME_REPLY_HEAD = b"\xf0\x04\x00"
"""An open-profile reply to a time request, successful (``agent.wrist.control``)."""
ARRIVAL_STAMP_NS = 1_000
"""A data notification's arrival is stamped in whole us, rounded up (so it stays a time the
packet had arrived by). The callback runs 0.3-3 ms after the radio event, with jitter of the
same order, so the ns digits are noise; whole us store in ~1.2 B less per notification
(agent/wrist/imu_batch.py; docs/design-notes.md)."""


# ---------------------------------------------------------------- retry policy

BackoffPolicy = backoff.Policy
"""The link's retry policy: the agent's one backoff (agent/backoff.py) with BLE's numbers
(``[ble] backoff_max`` is its cap)."""
DEFAULT_POLICY = BackoffPolicy()
NOT_FOUND_MIN_S = 1.0
"""A band that is not advertising is not worth asking for more often than this."""
ACQUIRE_SILENT_S = 5.0
"""With AcquireNotify, this long after the start commands with no data notification means
the socket delivers nothing on this host or band: reconnect with StartNotify. Every profile
streams within ~1 s of its start command, at a notification every <= 50 ms."""
NOTIFY_PATHS = ("auto", "acquire", "start")
"""The band's ``notify`` key: ``acquire``, AcquireNotify where offered (with fallback);
``auto``, the same except for a band that answers the two-way time exchange, which keeps
StartNotify; ``start``, StartNotify."""


def _characteristic(client: Any, uuid: str | None) -> Any:
    """The bleak characteristic ``uuid`` of the connected band, or None."""
    if uuid is None:
        return None
    try:
        return client.services.get_characteristic(uuid)
    except Exception:  # a layout with it twice was rejected before; anything else: absent
        return None


def check_services(services: Any, profile: SensorProfile) -> None:
    """Raise StaleGatt unless there is exactly one profile service with one notify and one
    control characteristic (``services``: a bleak BleakGATTServiceCollection)."""
    found = [s for s in services if s.uuid.lower() == profile.service_uuid]
    if len(found) != 1:
        raise StaleGatt(f"{len(found)} instances of service {profile.service_uuid}")
    chars = [c.uuid.lower() for c in found[0].characteristics]
    for uuid in (profile.notify_uuid, profile.control_uuid):
        if chars.count(uuid) != 1:
            raise StaleGatt(f"{chars.count(uuid)} instances of characteristic {uuid}")


def _close_acquired(client: Any) -> None:
    """Close the AcquireNotify sockets a disconnected client still holds: bleak closes them
    only on stop_notify or when BlueZ hangs up its end, and a lost link may do neither."""
    fds = getattr(getattr(client, "_backend", None), "_notification_fds", None)
    if not isinstance(fds, dict):
        return
    loop = asyncio.get_running_loop()
    for fd in list(fds.values()):
        with contextlib.suppress(Exception):
            loop.remove_reader(fd)
        with contextlib.suppress(OSError):
            os.close(fd)
    fds.clear()


# ---------------------------------------------------------------- the link


@dataclass(frozen=True, slots=True)
class LinkEvent:
    t_ns: int
    kind: str
    """connected | lost | stale-gatt-cleared | stale-view-cleared | failed | info (``data``:
    the band's info characteristic) | refused (``cause``: ``stream:the band's reason``) |
    no-reply (``cause``: the command, hex) | stopped (``data``: the params of the band's
    reply to the stop command; open profile: u32 next_seq) | time (``data``: u64 host send
    ns, u64 band clock µs at the request and at the reply, u64 host arrival ns: one time
    exchange)"""
    cause: str = ""
    data: bytes = b""


class BleLink:
    """One band's connection, a coroutine on the process's shared BLE loop (``ble_loop``)."""

    def __init__(self, *, name: str, address: str, adapter: str, profile: SensorProfile,
                 rate_hz: float, on_packet: Callable[[int, bytes], object],
                 on_event: Callable[[LinkEvent], object], connect_timeout: float = 20.0,
                 scan_timeout: float = 5.0, policy: BackoffPolicy = DEFAULT_POLICY,
                 clock: Clock = monotonic_ns, rng: random.Random | None = None,
                 aimer: PingAimer | None = None, notify_path: str = "auto") -> None:
        if notify_path not in NOTIFY_PATHS:
            raise ValueError(f"notify_path {notify_path!r}: one of {NOTIFY_PATHS}")
        self.name = name
        self.address = address.upper()
        self.adapter = adapter
        self.profile = profile
        self.rate_hz = rate_hz
        self.on_packet = on_packet
        self.on_event = on_event
        self.connect_timeout = connect_timeout
        self.scan_timeout = scan_timeout
        self.policy = policy
        self.clock = clock
        self.rng = rng or random.Random()
        self.lifecycle = Lifecycle(clock)
        self.repairs = {"stale-gatt": 0, "stale-view": 0}
        """Times the device was forgotten in BlueZ, by the fault that asked for it."""
        self.last_error = ""
        self._shared: SharedLoop | None = None
        self._future: concurrent.futures.Future[None] | None = None
        self._stopping: asyncio.Event | None = None
        self._lost: asyncio.Event | None = None
        self._lost_ns = 0
        self._replies: asyncio.Queue[bytes] | None = None  # the control point's replies
        self.two_way = False  # the band answers the time exchange (open profile v2)
        self._time_sent = -1  # host send time of the time request in flight
        self.aimer = aimer
        """Aims the time requests at connection events (fed by the band's stream)."""
        self.time_plan: TimeRequests | None = None
        self.notify_path = notify_path
        self.notify_via = ""
        """How this session's data notifications arrive: acquire-notify | start-notify."""
        self.notify_fallback = ""
        """Why AcquireNotify was given up for this run ("" while it is not)."""
        self.notifications = 0
        """Data notifications received, over the run."""
        self._subscribed_at = 0  # notifications before this session's data subscription
        self._silent = False  # this session ended because AcquireNotify delivered nothing
        self._refused = False  # the band refused a stream in this session
        self._ready = threading.Event()

    # -------------------------------------------------------------- thread control

    def start(self) -> None:
        from agent.wrist import ble_loop

        # bleak warns once per process that it cannot ask bluetoothctl for BlueZ's version
        logging.getLogger("bleak.backends.bluezdbus.version").setLevel(logging.ERROR)
        self._shared = ble_loop.acquire()
        self._future = self._shared.submit(self._main())
        self._future.add_done_callback(self._on_done)
        self._ready.wait(5.0)

    def stop(self, timeout: float = 5.0) -> None:
        shared, stopping = self._shared, self._stopping
        if shared is None:
            return
        if stopping is not None:
            with contextlib.suppress(RuntimeError):
                shared.loop.call_soon_threadsafe(stopping.set)
        if self._future is not None:
            try:
                self._future.result(timeout)
            except concurrent.futures.TimeoutError:
                self._future.cancel()
            except BaseException:  # logged by _on_done
                pass
        self._shared = None
        from agent.wrist import ble_loop

        ble_loop.release(shared)

    @property
    def running(self) -> bool:
        """True from start until the link's coroutine has ended."""
        return self._future is not None and not self._future.done()

    def _on_done(self, fut: concurrent.futures.Future[None]) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            log.error("%s: BLE link failed", self.name, exc_info=fut.exception())

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        self._ready.set()
        runner = asyncio.ensure_future(self._run())
        stop = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({runner, stop}, return_when=asyncio.FIRST_COMPLETED)
        if not runner.done():
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await runner
        stop.cancel()
        if self.lifecycle.can("stop"):
            self.lifecycle.fire("stop")

    # -------------------------------------------------------------- the state machine

    async def _run(self) -> None:
        lc = self.lifecycle
        lc.fire("start")
        scan = False  # first look in BlueZ's device list; scan only if it is not there
        device: Any = None
        cause = ""
        attempt = 0
        while True:
            if lc.state is State.SCANNING:
                device = await self._find(scan)
                if device is None:
                    cause, scan = "not-found", True
                    lc.fire("not_found", self.address)
                    self.on_event(LinkEvent(self.clock(), "failed", cause))
                else:
                    scan = False
                    lc.fire("found")
            elif lc.state is State.CONNECTING:
                cause, scan = await self._session(device)
                if self.lifecycle.counts.get("subscribed", 0) and cause in ("link-lost",
                                                                            "acquire-silent"):
                    attempt = 0  # a working link was lost: start the backoff afresh
                lc.fire("retry", cause)
            elif lc.state is State.BACKOFF:
                floor = NOT_FOUND_MIN_S if cause == "not-found" else 0.0
                await asyncio.sleep(backoff.delay(self.policy, attempt + 1, self.rng,
                                                  floor_s=floor))
                attempt += 1
                lc.fire("rescan" if scan or device is None else "reconnect")
            else:  # pragma: no cover - the table allows nothing else here
                raise RuntimeError(f"unexpected state {lc.state}")

    async def _session(self, device: Any) -> tuple[str, bool]:
        """Connect, subscribe, stream until the link is lost. Returns (cause, rescan)."""
        lc = self.lifecycle
        client = None
        streaming = False
        cause = "stopped"
        try:
            client = await self._connect(device)
            lc.fire("connected")
            await self._subscribe(client)
            lc.fire("subscribed")
            streaming = True
            self.on_event(LinkEvent(self.clock(), "connected", self.notify_via))
            assert self._lost is not None
            tasks = []
            if self.two_way:
                tasks.append(asyncio.ensure_future(self._time_loop(client)))
            if self.notify_via == "acquire-notify" and not self._refused:
                tasks.append(asyncio.ensure_future(self._watch_acquired(self._lost)))
            try:
                await self._lost.wait()
            finally:
                for task in tasks:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            cause = "acquire-silent" if self._silent else "link-lost"
            lc.fire("lost", cause)
            return cause, False
        except asyncio.CancelledError:
            if client is not None:
                await self._shutdown(client)
                client = None
            raise
        except Exception as exc:
            cause = classify(exc)
            if self._lost is not None and self._lost.is_set() and not needs_repair(cause):
                cause = "link-lost"  # a call that failed because the link had gone down
            self.last_error = f"{cause}: {str(exc) or type(exc).__name__}"
            log.info("%s: %s", self.name, self.last_error)
            lc.fire("failed", cause)
            stale = needs_repair(cause)
            if stale:
                await self._disconnect(client)
                client = None
                if await self._forget("stale-gatt"):
                    self.on_event(LinkEvent(self.clock(), "stale-gatt-cleared", cause))
            else:
                self.on_event(LinkEvent(self.clock(), "failed", cause))
            return cause, stale
        finally:
            if client is not None:
                await self._disconnect(client)
            if streaming and cause != "stopped":
                self.on_event(LinkEvent(self._lost_ns or self.clock(), "lost", cause))

    async def _find(self, scan: bool) -> Any:
        """The band's BLEDevice: from BlueZ's device list unless ``scan``, else by scanning
        (while scanning, BlueZ's list is checked too: an advertisement that BlueZ reported
        before the scanner's callback was in place is not lost)."""
        from bleak import BleakScanner
        from bleak_retry_connector import get_device_by_adapter

        try:
            if not scan:
                dev = await get_device_by_adapter(self.address, self.adapter)
                if dev is not None:
                    return dev
            found: list[Any] = []
            seen = asyncio.Event()

            def on_adv(d: Any, _adv: Any) -> None:
                if d.address.upper() == self.address:
                    found.append(d)
                    seen.set()

            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.scan_timeout
            async with BleakScanner(on_adv, bluez={"adapter": self.adapter}):
                while not seen.is_set() and loop.time() < deadline:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(seen.wait(), 0.25)
                    if not seen.is_set():
                        dev = await get_device_by_adapter(self.address, self.adapter)
                        if dev is not None:
                            return dev
            if found:
                return found[-1]
            await self._heal_stale_view()
            return None
        except Exception as exc:
            err = self._translate(exc, "scan failed")
            self.last_error = str(err)
            log.info("%s", err)
            return None

    async def _heal_stale_view(self) -> None:
        """After a scan that did not find the band: if BlueZ lists it anyway, the BLE
        library's cache lost its device object; forget the device so that the next scan
        announces it again."""
        async with asyncio.timeout(5.0):
            if not await bluez_dbus.has_device(self.adapter, self.address):
                return
        log.warning("%s: BlueZ lists %s but the BLE library's view of BlueZ lacks it; "
                    "removing it so the next scan announces it again", self.name, self.address)
        if await self._forget("stale-view"):
            self.on_event(LinkEvent(self.clock(), "stale-view-cleared", "not-found"))

    async def _connect(self, device: Any) -> Any:
        from bleak import BleakClient
        from bleak_retry_connector import establish_connection

        self._lost = asyncio.Event()
        self._lost_ns = 0
        self._silent = self._refused = False
        lost = self._lost

        def disconnected(_client: Any) -> None:
            if not lost.is_set():
                self._lost_ns = self.clock()
                lost.set()

        async with asyncio.timeout(self.connect_timeout * 3):
            return await establish_connection(
                BleakClient, device, self.name, disconnected_callback=disconnected,
                max_attempts=3, use_services_cache=False, bluez={"adapter": self.adapter},
                timeout=self.connect_timeout)

    async def _subscribe(self, client: Any) -> None:
        """Check the layout, read the band's info, subscribe to its control point's replies
        and its data, then send the rate and start commands, reading the reply to each: a
        stream the band refuses is a ``refused`` event with the band's reason."""
        prof = self.profile
        check_services(client.services, prof)
        push = self.on_packet
        clock = self.clock
        version = 0  # the open profile's version, from its info characteristic
        info = _characteristic(client, prof.info_uuid) if prof.info_uuid else None
        if info is not None and "read" in info.properties:
            data = bytes(await client.read_gatt_char(prof.info_uuid))
            version = data[0] if data else 0
            self.on_event(LinkEvent(clock(), "info", data=data))
        facts = registry.facts(prof.name)
        self.two_way = facts.two_way(version)
        replying = facts.answers(version)  # an open band of version 1 answers nothing
        replies = self._replies = await self._control_replies(client) if replying else None

        def on_notify(_char: Any, data: bytearray) -> None:  # the hot path: nothing else
            push(-(-clock() // ARRIVAL_STAMP_NS) * ARRIVAL_STAMP_NS, bytes(data))
            self.notifications += 1

        await self._start_data(client, on_notify)
        for cmd in (*prof.rate_commands(self.rate_hz), *prof.start_commands(self.rate_hz)):
            await client.write_gatt_char(prof.control_uuid, cmd, response=True)
            if replies is not None:
                await self._read_reply(replies, cmd)

    async def _start_data(self, client: Any, on_notify: Callable[[Any, bytearray], None]) -> None:
        """Subscribe to the data characteristic: AcquireNotify where it is offered and not
        given up, else (or when it fails on a link that is still up) StartNotify."""
        uuid = self.profile.notify_uuid
        self._subscribed_at = self.notifications
        char = _characteristic(client, uuid)
        props: Any = getattr(char, "obj", (None, {}))[1]  # BlueZ's properties of it
        # a two-way band's exchange observes the time-request write's latency plus the data
        # notification's, and its bound holds while the two are alike (TWO_WAY_ASYMMETRY):
        # both on D-Bus. AcquireNotify would take the notifications off D-Bus while the
        # writes stay on it, so ``auto`` keeps StartNotify for such a band
        acquire = self.notify_path == "acquire" or (self.notify_path == "auto"
                                                    and not self.two_way)
        if (acquire and not self.notify_fallback
                and isinstance(props, dict) and "NotifyAcquired" in props):
            try:
                await client.start_notify(uuid, on_notify, bluez={"use_start_notify": False})
            except Exception as exc:
                if self._lost is not None and self._lost.is_set():
                    raise  # the link went down: not AcquireNotify's fault
                reason = f"acquire-failed: {classify(exc)}"
                log.info("%s: AcquireNotify failed (%s); using StartNotify", self.name,
                         str(exc) or type(exc).__name__)
            else:
                self.notify_via = "acquire-notify"
                return
            await client.start_notify(uuid, on_notify)
            self.notify_fallback = reason
        else:
            await client.start_notify(uuid, on_notify)
        self.notify_via = "start-notify"

    async def _watch_acquired(self, lost: asyncio.Event) -> None:
        """End the session as ``acquire-silent`` if AcquireNotify delivered nothing since
        the subscription, ``ACQUIRE_SILENT_S`` after the start commands."""
        await asyncio.sleep(ACQUIRE_SILENT_S)
        if self.notifications == self._subscribed_at and not lost.is_set():
            log.warning("%s: no notification through AcquireNotify in %.0f s; reconnecting "
                        "with StartNotify", self.name, ACQUIRE_SILENT_S)
            self.notify_fallback = "acquire-silent"
            self._silent = True
            self._lost_ns = self.clock()
            lost.set()

    async def _control_replies(self, client: Any) -> asyncio.Queue[bytes] | None:
        """Subscribe to the control point if it notifies or indicates (its replies)."""
        from agent.wrist.control import REPLYING

        if self.profile.name not in REPLYING:
            return None
        char = _characteristic(client, self.profile.control_uuid)
        if char is None or not {"notify", "indicate"} & set(char.properties):
            return None
        q: asyncio.Queue[bytes] = asyncio.Queue()
        clock = self.clock

        def on_reply(_char: Any, data: bytearray) -> None:
            if data[:3] == TIME_REPLY_HEAD:  # a time exchange: stamp its arrival at once
                self._on_time_reply(clock(), bytes(data))
            else:
                q.put_nowait(bytes(data))

        await client.start_notify(self.profile.control_uuid, on_reply)
        return q

    def _on_time_reply(self, arrival_ns: int, data: bytes) -> None:
        from agent.wrist.decode.open_profile import parse_time_reply

        try:
            sent, rx_us, tx_us = parse_time_reply(data[3:])
        except ValueError:
            return
        if sent != self._time_sent:
            return  # not the request in flight (a late reply): its send time is not ours
        self.on_event(LinkEvent(arrival_ns, "time",
                                data=struct.pack("<QQQQ", sent, rx_us, tx_us, arrival_ns)))

    async def _time_loop(self, client: Any) -> None:
        """The open profile's two-way time exchange while streaming: write the host's send
        time, the band replies with its clock (``_on_time_reply``). On the cadence of
        ``agent.wrist.time_requests``, each request aimed just before a connection event
        once the band's events are known (``aimer``); one request in flight at a time."""
        from agent.wrist.ble_loop import sleep_ns
        from agent.wrist.decode.open_profile import time_request
        from agent.wrist.time_requests import TimeRequests

        plan = TimeRequests(self.aimer.next if self.aimer is not None else None, self.rng)
        self.time_plan = plan
        while True:
            self._time_sent = self.clock()
            await client.write_gatt_char(self.profile.control_uuid,
                                         time_request(self._time_sent), response=False)
            wait_ns = plan.after(self._time_sent) - self.clock()
            await sleep_ns(wait_ns)  # woken as asyncio's loop wakes, on uvloop too

    async def _read_reply(self, q: asyncio.Queue[bytes], cmd: bytes, timeout: float = 1.0,
                          judge: bool = True) -> Reply | None:
        """Wait for the reply to ``cmd``; with ``judge``, a refusal is a ``refused`` event."""
        from agent.wrist.control import decode_reply, refusal

        try:
            async with asyncio.timeout(timeout):
                while True:
                    reply = decode_reply(self.profile.name, await q.get())
                    if reply is not None:
                        break
        except TimeoutError:
            self.on_event(LinkEvent(self.clock(), "no-reply", cmd.hex(" ")))
            return None
        if judge and not reply.ok:
            self._refused = True
            log.warning("%s: the band refused %s: %s", self.name, reply.stream or reply.op,
                        refusal(reply))
            self.on_event(LinkEvent(self.clock(), "refused",
                                    f"{reply.stream or 'stream'}:{refusal(reply)}"))
        return reply

    async def _shutdown(self, client: Any) -> None:
        """Stop the band's stream, then disconnect (on the way out)."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(3.0):
                replies = self._replies
                while replies is not None and not replies.empty():
                    replies.get_nowait()  # late replies to earlier commands
                for cmd in self.profile.stop_commands():
                    await client.write_gatt_char(self.profile.control_uuid, cmd, response=True)
                    if replies is not None:  # the band replies after what it still sends
                        reply = await self._read_reply(replies, cmd, judge=False)
                        if reply is not None and reply.op == "stop":  # the source counts by it
                            self.on_event(LinkEvent(self.clock(), "stopped", data=reply.params))
                await asyncio.sleep(0.2)  # notifications already in flight still arrive
        await self._disconnect(client)

    async def _disconnect(self, client: Any) -> None:
        if client is None:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5.0):
                await client.disconnect()
        _close_acquired(client)

    async def _forget(self, fault: str) -> bool:
        """The one repair, for a stale GATT cache and a stale view alike: BlueZ forgets the
        device (objects and cache), so the next scan announces it afresh."""
        try:
            async with asyncio.timeout(5.0):
                await bluez_dbus.forget_device(self.adapter, self.address)
        except Exception as exc:
            log.info("%s (%s)", self._translate(exc, f"could not forget the device ({fault})"),
                     classify(exc))
            return False
        self.repairs[fault] += 1
        return True

    def _translate(self, exc: BaseException, what: str) -> SourceError:
        try:
            raise SourceError(f"{what}: {exc or type(exc).__name__}", device=self.name) from exc
        except SourceError as err:
            return err
