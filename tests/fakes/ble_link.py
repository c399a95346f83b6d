"""A fake of ``agent.wrist.ble.BleLink``: the link a ``WristSource`` reads, with no radio.

It satisfies ``agent.wrist.link.Link`` and ``LinkFactory`` like the real class, and its
public methods and constructor parameters exist in ``BleLink`` with the same names, kinds and
defaults (``tests/test_ble_fake_canary.py`` checks it). Its lifecycle is the real table
(``agent.wrist.lifecycle``), so a test can only drive it through transitions the real link
can make. Test controls start with ``_fake``.

    links = FakeLinks()
    src = WristSource(band, ble, clock=clock, link_factory=links)
    src.start(); link = links.last
    link._fake_streaming(t_ns)                 # scanning -> ... -> streaming + "connected"
    link.on_packet(arrival_ns, data)           # what the BLE callback does
    link._fake_lost(t_ns)                      # streaming -> disconnected + "lost"
    link._fake_at_stop = [(arrival, data), ...]; link._fake_stop_reply = b"..."  # at stop
"""

from __future__ import annotations

from collections.abc import Callable

from agent.timeline import Clock, monotonic_ns
from agent.wrist.ble import BackoffPolicy, LinkEvent
from agent.wrist.lifecycle import Lifecycle, State
from agent.wrist.profiles import SensorProfile
from agent.wrist.timing import PingAimer

DEFAULT_POLICY = BackoffPolicy()


class FakeBleLink:
    def __init__(self, *, name: str, address: str, adapter: str, profile: SensorProfile,
                 rate_hz: float, on_packet: Callable[[int, bytes], object],
                 on_event: Callable[[LinkEvent], object], connect_timeout: float = 20.0,
                 scan_timeout: float = 5.0, policy: BackoffPolicy = DEFAULT_POLICY,
                 clock: Clock = monotonic_ns, aimer: PingAimer | None = None,
                 notify_path: str = "auto") -> None:
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
        self.aimer = aimer
        self.notify_path = notify_path
        self.lifecycle = Lifecycle(clock)
        self.last_error = ""
        self._fake_started = False
        self._fake_at_stop: list[tuple[int, bytes]] = []
        """Notifications the band sends after the stop command, before its reply."""
        self._fake_stop_reply: bytes | None = None
        """The ``stopped`` event's data (the band's stop reply params), if it replies."""

    def start(self) -> None:
        self._fake_started = True
        self.lifecycle.fire("start")

    def stop(self, timeout: float = 5.0) -> None:
        if self.lifecycle.state is State.STREAMING:
            for arrival, data in self._fake_at_stop:
                self.on_packet(arrival, data)
            if self._fake_stop_reply is not None:
                self.on_event(LinkEvent(self.clock(), "stopped", data=self._fake_stop_reply))
        if self.lifecycle.can("stop"):
            self.lifecycle.fire("stop")

    @property
    def running(self) -> bool:
        return self._fake_started and self.lifecycle.state is not State.STOPPED

    # ------------------------------------------------------------ test controls

    def _fake_streaming(self, t_ns: int | None = None) -> None:
        """Connect and subscribe (through the lifecycle table), then say so."""
        lc = self.lifecycle
        if lc.state is State.DISCONNECTED:
            lc.fire("retry")
            lc.fire("reconnect")
        if lc.state is State.SCANNING:
            lc.fire("found")
        lc.fire("connected")
        lc.fire("subscribed")
        self.on_event(LinkEvent(self.clock() if t_ns is None else t_ns, "connected"))

    def _fake_lost(self, t_ns: int | None = None, cause: str = "link-lost") -> None:
        self.lifecycle.fire("lost", cause)
        self.on_event(LinkEvent(self.clock() if t_ns is None else t_ns, "lost", cause))


class FakeLinks:
    """A ``LinkFactory`` that makes ``FakeBleLink`` and keeps each one it made."""

    def __init__(self) -> None:
        self.made: list[FakeBleLink] = []

    def __call__(self, **kw: object) -> FakeBleLink:
        link = FakeBleLink(**kw)  # type: ignore[arg-type]
        self.made.append(link)
        return link

    @property
    def last(self) -> FakeBleLink:
        return self.made[-1]
