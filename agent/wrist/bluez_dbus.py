"""Calls straight to BlueZ on the system bus (dbus-fast), for what bleak does not offer.

    body = await call(path, interface, member, signature, args)   # DBusError on an error reply
    await forget_device(adapter, address)   # the one repair: Adapter1.RemoveDevice
    await has_device(adapter, address)      # BlueZ itself lists it (not bleak's cached view)
    await managed_objects()                 # ObjectManager.GetManagedObjects at /

An error reply is raised as ``dbus_fast.errors.DBusError`` with the reply's error name in
``.type``, so that ``agent.wrist.ble_errors.classify`` reads the name, never the text.
dbus-fast is imported lazily.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

NO_OBJECT = ("org.freedesktop.DBus.Error.UnknownObject",
             "org.freedesktop.DBus.Error.UnknownInterface",
             "org.freedesktop.DBus.Error.UnknownMethod",
             "org.freedesktop.DBus.Error.InvalidArgs")
"""Error names that mean: no such object or interface at that path."""


def device_path(adapter: str, address: str) -> str:
    return f"/org/bluez/{adapter}/dev_{address.upper().replace(':', '_')}"


async def call(path: str, interface: str, member: str, signature: str = "",
               body: Sequence[Any] = (), *, bus_address: str | None = None) -> list[Any]:
    """One method call to ``org.bluez`` on the system bus (``bus_address``: another bus);
    the reply's body. An error reply raises ``DBusError`` carrying its name."""
    from dbus_fast import BusType, Message, MessageType
    from dbus_fast.aio import MessageBus
    from dbus_fast.errors import DBusError

    bus = await MessageBus(bus_address=bus_address, bus_type=BusType.SYSTEM).connect()
    try:
        reply = await bus.call(Message(destination="org.bluez", path=path, interface=interface,
                                       member=member, signature=signature, body=list(body)))
    finally:
        bus.disconnect()
    if reply is None:
        raise DBusError("org.freedesktop.DBus.Error.NoReply", f"{member}: no reply")
    if reply.message_type == MessageType.ERROR:
        text = str(reply.body[0]) if reply.body else ""
        raise DBusError(reply.error_name or "org.freedesktop.DBus.Error.Failed", text,
                        reply=reply)
    return list(reply.body)


async def forget_device(adapter: str, address: str) -> None:
    """Have BlueZ forget a device (its objects and GATT cache too): the next scan announces
    it afresh. ``Adapter1.RemoveDevice``."""
    await call(f"/org/bluez/{adapter}", "org.bluez.Adapter1", "RemoveDevice", "o",
               [device_path(adapter, address)])


async def has_device(adapter: str, address: str) -> bool:
    """Whether BlueZ itself lists the device on ``adapter`` (asked directly, not a cache)."""
    from dbus_fast.errors import DBusError

    try:
        await call(device_path(adapter, address), "org.freedesktop.DBus.Properties", "Get",
                   "ss", ["org.bluez.Device1", "Address"])
    except DBusError as exc:
        if exc.type in NO_OBJECT:
            return False
        raise
    return True


async def managed_objects(*, bus_address: str | None = None) -> dict[str, Any]:
    """Every object BlueZ exports, with its interfaces and their properties."""
    (objects,) = await call("/", "org.freedesktop.DBus.ObjectManager", "GetManagedObjects",
                            bus_address=bus_address)
    return dict(objects)
