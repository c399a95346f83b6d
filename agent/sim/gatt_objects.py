"""The D-Bus objects a simulated band exports to the private BlueZ: GATT characteristics and
services (``org.bluez.GattCharacteristic1`` / ``GattService1``) and its LE advertisement
(``org.bluez.LEAdvertisement1``). The band program (``agent.sim.peripheral``) owns them and
receives their writes and notification switches through ``GattHandler``.

How a characteristic delivers its notifications (``characteristic(..., acquire=...)``):

- ``start`` (``Characteristic``): ``StartNotify`` only; every notification is a
  ``PropertiesChanged`` on ``Value``.
- ``acquire`` (``AcquiringCharacteristic``): ``NotifyAcquired`` and ``AcquireNotify`` too,
  as BlueZ offers them: ``AcquireNotify`` hands over one end of a ``SOCK_SEQPACKET`` pair,
  and each notification is one packet written into the other end (no D-Bus per packet). The
  simulated BlueZ forwards a central's ``AcquireNotify`` here, and serves a central's
  ``StartNotify`` from the same socket (it reads it and sets ``Value``). When the central
  closes its end, notifying stops, as in BlueZ.
- ``silent-acquire`` (``SilentAcquireCharacteristic``): ``AcquireNotify`` is accepted but
  nothing ever comes out of the socket; ``StartNotify`` works. The failure of hosts and
  bands on which AcquireNotify subscribes without delivering.
"""

# No ``from __future__ import annotations`` here: dbus-fast reads the D-Bus signatures from
# the annotations ("s", "ay", "a{sv}") at class creation, which linters read as names.
# ruff: noqa: F821, F722
# mypy: disable-error-code="name-defined, valid-type, no-untyped-def, misc, attr-defined"

import asyncio
import contextlib
import os
import socket
from typing import Protocol

from dbus_fast.service import PropertyAccess, ServiceInterface, dbus_property, method


class GattHandler(Protocol):
    def on_write(self, uuid: str, value: bytes) -> None: ...

    def on_notify(self, uuid: str, on: bool) -> None: ...


class Characteristic(ServiceInterface):
    def __init__(self, band: GattHandler, uuid: str, service_path: str, flags: list[str]) -> None:
        super().__init__("org.bluez.GattCharacteristic1")
        self.band = band
        self._uuid = uuid
        self._service = service_path
        self._flags = flags
        self.value = b""
        self.notifying = False

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> "s":
        return self._uuid

    @dbus_property(access=PropertyAccess.READ)
    def Service(self) -> "o":
        return self._service

    @dbus_property(access=PropertyAccess.READ)
    def Flags(self) -> "as":
        return self._flags

    @dbus_property(access=PropertyAccess.READ)
    def Value(self) -> "ay":
        return self.value

    @dbus_property(access=PropertyAccess.READ)
    def Notifying(self) -> "b":
        return self.notifying

    @method()
    def ReadValue(self, options: "a{sv}") -> "ay":
        return self.value

    @method()
    def WriteValue(self, value: "ay", options: "a{sv}"):
        self.band.on_write(self._uuid, bytes(value))

    @method()
    def StartNotify(self):
        self.set_notifying(True)
        self.band.on_notify(self._uuid, True)

    @method()
    def StopNotify(self):
        self.set_notifying(False)
        self.band.on_notify(self._uuid, False)

    @method()
    def Confirm(self):
        pass

    def set_notifying(self, on: bool) -> None:
        if on != self.notifying:
            self.notifying = on
            self.emit_properties_changed({"Notifying": on})

    def notify(self, value: bytes) -> None:
        self.value = value
        self.emit_properties_changed({"Value": value})


ACQUIRE_MTU = 517
"""The MTU an acquired socket reports (the ATT maximum): a packet is never cut by it."""


class AcquiringCharacteristic(Characteristic):
    """A characteristic that also offers ``AcquireNotify`` (a socket per subscription)."""

    deliver = True
    """False: the socket is handed over but stays silent (``SilentAcquireCharacteristic``)."""

    def __init__(self, band: GattHandler, uuid: str, service_path: str, flags: list[str]) -> None:
        super().__init__(band, uuid, service_path, flags)
        self.sock: socket.socket | None = None
        self.acquires = 0
        self.for_central = False
        """The socket was acquired for the central itself (its AcquireNotify, passed on
        with its own options), not by the simulated BlueZ to serve a StartNotify (which
        names the device, MTU and link in its options, as BlueZ does)."""

    @method()
    def AcquireNotify(self, options: "a{sv}") -> "hq":
        self.release()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        self.sock = ours
        self.acquires += 1
        self.for_central = "device" not in options
        loop = asyncio.get_running_loop()
        loop.add_reader(ours.fileno(), self._on_readable, ours)
        fd = theirs.detach()
        # the reply carries a copy of ``fd``; ours must be closed once it is sent, or the
        # central closing its copy would never reach us as a hang-up
        loop.call_later(1.0, _close_fd, fd)
        self.set_notifying(True)
        self.band.on_notify(self._uuid, True)
        return [fd, ACQUIRE_MTU]

    def _on_readable(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(ACQUIRE_MTU)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data and sock is self.sock:  # the central closed its end: unsubscribed
            self.release()
            self.set_notifying(False)
            self.band.on_notify(self._uuid, False)

    def release(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()

    def set_notifying(self, on: bool) -> None:
        if not on:
            self.release()  # a lost link or a stopped stream closes the socket, as BlueZ does
        super().set_notifying(on)

    def notify(self, value: bytes) -> None:
        sock = self.sock
        if sock is None:
            super().notify(value)
            return
        self.value = value
        if not self.deliver:
            return
        try:
            sock.send(value)
        except BlockingIOError:
            pass  # the central is not reading: the packet is lost, as over the air
        except OSError:
            self.release()


class NotifyAcquiredCharacteristic(AcquiringCharacteristic):
    @dbus_property(access=PropertyAccess.READ)
    def NotifyAcquired(self) -> "b":
        return self.sock is not None


class SilentAcquireCharacteristic(AcquiringCharacteristic):
    """AcquireNotify is accepted and the socket stays silent. Without ``NotifyAcquired``,
    the simulated BlueZ serves ``StartNotify`` the D-Bus way, so that path works."""

    deliver = False


NOTIFY_PATHS = ("acquire", "start", "silent-acquire")


def characteristic(band: GattHandler, uuid: str, service_path: str, flags: list[str],
                   acquire: str = "acquire") -> Characteristic:
    """The characteristic object for a notify path of ``NOTIFY_PATHS`` (only characteristics
    that notify or indicate get AcquireNotify)."""
    if acquire not in NOTIFY_PATHS:
        raise ValueError(f"notify path {acquire!r}: one of {NOTIFY_PATHS}")
    if acquire == "start" or not {"notify", "indicate"} & set(flags):
        return Characteristic(band, uuid, service_path, flags)
    if acquire == "silent-acquire":
        return SilentAcquireCharacteristic(band, uuid, service_path, flags)
    return NotifyAcquiredCharacteristic(band, uuid, service_path, flags)


def _close_fd(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


class Service(ServiceInterface):
    def __init__(self, uuid: str) -> None:
        super().__init__("org.bluez.GattService1")
        self._uuid = uuid

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> "s":
        return self._uuid

    @dbus_property(access=PropertyAccess.READ)
    def Primary(self) -> "b":
        return True


class Advertisement(ServiceInterface):
    def __init__(self, name: str, uuids: list[str]) -> None:
        super().__init__("org.bluez.LEAdvertisement1")
        self._name = name
        self._uuids = uuids

    @dbus_property(access=PropertyAccess.READ)
    def Type(self) -> "s":
        return "peripheral"

    @dbus_property(access=PropertyAccess.READ)
    def LocalName(self) -> "s":
        return self._name

    @dbus_property(access=PropertyAccess.READ)
    def ServiceUUIDs(self) -> "as":
        return self._uuids

    @dbus_property(access=PropertyAccess.READ)
    def Discoverable(self) -> "b":
        return True

    @method()
    def Release(self):
        pass
