"""What went wrong on a BLE link, from the exception's type and its D-Bus error name.

    kind = classify(exc)           # "timeout", "not-found", "stale-gatt", ... (KINDS)

A failure's kind decides what the link does next (``agent.wrist.ble``: rescan, forget the
device in BlueZ, how long to back off) and is written into the gap that covers it
(``not-connected:<kind>``, ``disconnect:<kind>``). It is read from structured fields only:

- the exception's class (bleak's, bleak-retry-connector's, dbus-fast's, asyncio's, the
  link's own ``StaleGatt``), most specific first;
- the D-Bus error *name* of a BlueZ or bus reply (``BleakDBusError.dbus_error``,
  ``dbus_fast.errors.DBusError.type``), e.g. ``org.bluez.Error.InProgress``;
- along the exception chain (``__cause__``, else an unsuppressed ``__context__``, as a
  traceback shows it): bleak-retry-connector
  wraps what BlueZ said in its own classes, and a wrapper that says nothing specific
  (``BleakConnectionError``) defers to what it wraps.

Message text is never matched: it is free text that changes between BlueZ and bleak
versions and locales. Where a class and a name say nothing specific, the kind says so
(``failed``, ``dbus:<name>``, ``error:<class>``) instead of guessing. bleak and dbus-fast are
imported lazily: a machine without them still classifies the rest.
"""

from __future__ import annotations

KINDS = {
    "stale-gatt": "BlueZ's objects for the band are not the band's layout (a GATT cache from "
                  "other firmware, or objects gone): the device is forgotten and found anew",
    "not-found": "the band is not advertising, or BlueZ does not know it",
    "timeout": "no answer in time",
    "connect-aborted": "the connection was aborted while it was being set up",
    "in-progress": "BlueZ is busy with the same operation",
    "link-lost": "the link went down",
    "acquire-silent": "no notification came through AcquireNotify: the link reconnects "
                      "with StartNotify (agent.wrist.ble)",
    "no-slot": "the adapter has no free connection slot",
    "no-adapter": "the Bluetooth adapter is missing, off or not allowed",
    "no-bluez": "BlueZ is not on the bus",
    "bus-closed": "the D-Bus connection closed",
    "gatt": "the band answered a GATT request with an ATT error",
    "failed": "BlueZ reported a failure with no more specific name",
}
"""Every kind ``classify`` returns, besides ``dbus:<name>`` and ``error:<class>``."""

DBUS_NAMES = {
    "org.freedesktop.DBus.Error.UnknownObject": "stale-gatt",
    "org.freedesktop.DBus.Error.UnknownMethod": "stale-gatt",
    "org.freedesktop.DBus.Error.UnknownInterface": "stale-gatt",
    "org.freedesktop.DBus.Error.ServiceUnknown": "no-bluez",
    "org.freedesktop.DBus.Error.NameHasNoOwner": "no-bluez",
    "org.freedesktop.DBus.Error.NoReply": "timeout",
    "org.freedesktop.DBus.Error.Timeout": "timeout",
    "org.freedesktop.DBus.Error.TimedOut": "timeout",
    "org.freedesktop.DBus.Error.Disconnected": "bus-closed",
    "org.bluez.Error.InProgress": "in-progress",
    "org.bluez.Error.NotConnected": "link-lost",
    "org.bluez.Error.DoesNotExist": "not-found",
    "org.bluez.Error.NotFound": "not-found",
    "org.bluez.Error.NotReady": "no-adapter",
    "org.bluez.Error.NotAvailable": "no-adapter",
    "org.bluez.Error.ConnectionAttemptFailed": "connect-aborted",
    "org.bluez.Error.Failed": "failed",
}
"""D-Bus error names (BlueZ's and the bus's) and the kind each means on a band's link."""


def dbus_error_name(exc: BaseException) -> str | None:
    """The D-Bus error name a bleak or dbus-fast exception carries, if any."""
    try:
        from bleak.exc import BleakDBusError
    except ImportError:  # pragma: no cover - bleak is a dependency of the wrist path
        BleakDBusError = ()  # type: ignore[assignment,misc]
    if isinstance(exc, BleakDBusError):
        return str(exc.dbus_error)
    try:
        from dbus_fast.errors import DBusError
    except ImportError:  # pragma: no cover
        return None
    if isinstance(exc, DBusError):
        return str(exc.type)
    return None


class StaleGatt(Exception):
    """The services BlueZ reports do not match the band's profile."""


def _own(exc: BaseException) -> str | None:
    """The kind ``exc`` itself says, or None if it says nothing specific."""
    if isinstance(exc, StaleGatt):
        return "stale-gatt"
    if isinstance(exc, TimeoutError):  # asyncio.TimeoutError too, on 3.11
        return "timeout"
    if isinstance(exc, (EOFError, BrokenPipeError, ConnectionResetError)):
        return "bus-closed"  # dbus-fast's socket to the bus closed under a call
    name = dbus_error_name(exc)
    if name is not None:
        return DBUS_NAMES.get(name, f"dbus:{name}")
    try:
        import bleak.exc as be
        import bleak_retry_connector as brc
    except ImportError:  # pragma: no cover
        return None
    by_class: list[tuple[type[BaseException], str]] = [
        (brc.BleakAbortedError, "connect-aborted"),
        (brc.BleakOutOfConnectionSlotsError, "no-slot"),
        (brc.BleakNotFoundError, "not-found"),
        (be.BleakDeviceNotFoundError, "not-found"),
        (be.BleakCharacteristicNotFoundError, "stale-gatt"),
        (be.BleakBluetoothNotAvailableError, "no-adapter"),
        (be.BleakGATTProtocolError, "gatt"),
    ]
    for cls, kind in by_class:
        if isinstance(exc, cls):
            return kind
    return None


def classify(exc: BaseException) -> str:
    """The kind of a link failure (a key of ``KINDS``, ``dbus:<name>`` or ``error:<class>``)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        kind = _own(cur)
        if kind is not None:
            return kind
        cur = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)
    return f"error:{type(exc).__name__}"


def needs_repair(kind: str) -> bool:
    """Whether a failure of ``kind`` is mended by forgetting the device in BlueZ."""
    return kind == "stale-gatt"

