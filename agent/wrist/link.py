"""What a wrist band's link is to the source that reads it: a ``typing.Protocol``.

    link = factory(name=..., address=..., adapter=..., profile=..., rate_hz=...,
                   on_packet=..., on_event=..., connect_timeout=..., scan_timeout=...,
                   policy=..., clock=..., aimer=...)
    link.start(); link.running; link.lifecycle.state; link.last_error; link.stop()

The real link is ``agent.wrist.ble.BleLink`` (bleak on BlueZ); the tests' fake is
``tests/fakes/ble_link.py``. Both satisfy ``Link`` and ``LinkFactory`` (mypy checks the real
one where ``WristSource`` takes it as its default; ``tests/test_ble_fake_canary.py`` holds the
fake to the real class's API). ``on_packet(arrival_ns, bytes)`` is called for every
notification, from the link's thread; ``on_event(LinkEvent)`` for every link event
(``agent.wrist.ble.LinkEvent``: connected, lost, failed, refused, info, time, stopped, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from agent.timeline import Clock
from agent.wrist.ble import BackoffPolicy, LinkEvent
from agent.wrist.lifecycle import State

if TYPE_CHECKING:
    from agent.wrist.profiles import SensorProfile
    from agent.wrist.timing import PingAimer

__all__ = ["Link", "LinkEvent", "LinkFactory", "LinkState"]


class LinkState(Protocol):
    """The connection's lifecycle as the source reads it (``agent.wrist.lifecycle``)."""

    @property
    def state(self) -> State: ...

    @property
    def reconnects(self) -> int: ...


@runtime_checkable
class Link(Protocol):
    @property
    def lifecycle(self) -> LinkState: ...

    @property
    def last_error(self) -> str: ...

    @property
    def running(self) -> bool:
        """True from ``start()`` until the link has ended for good."""
        ...

    def start(self) -> None: ...

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the band's stream (its stop command and reply), disconnect, end the link."""
        ...


class LinkFactory(Protocol):
    def __call__(self, *, name: str, address: str, adapter: str, profile: SensorProfile,
                 rate_hz: float, on_packet: Callable[[int, bytes], object],
                 on_event: Callable[[LinkEvent], object], connect_timeout: float,
                 scan_timeout: float, policy: BackoffPolicy, clock: Clock,
                 aimer: PingAimer | None = None, notify_path: str = "auto") -> Link: ...
