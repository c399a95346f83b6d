"""BLE failures are classified by their type and D-Bus error name, never their text: errors
provoked from the real stack (bleak and dbus-fast against a user-space BlueZ on a private
bus), and the library classes the link meets, with messages chosen to mislead."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from bleak.exc import (
    BleakCharacteristicNotFoundError,
    BleakDBusError,
    BleakDeviceNotFoundError,
    BleakError,
    BleakGATTProtocolError,
    BleakGATTProtocolErrorCode,
)
from bleak_retry_connector import (
    BleakAbortedError,
    BleakConnectionError,
    BleakNotFoundError,
    BleakOutOfConnectionSlotsError,
)
from dbus_fast.errors import DBusError

from agent.sim.bluez import CENTRAL_ADDRESS, PrivateBluez, missing_tools, run_async
from agent.wrist import bluez_dbus
from agent.wrist.ble_errors import DBUS_NAMES, KINDS, StaleGatt, classify, needs_repair

ABSENT = "00:AA:BB:CC:DD:99"


def test_the_dbus_error_name_decides_not_the_message():
    # the text says one thing, the name another: the name wins
    assert classify(BleakDBusError("org.bluez.Error.InProgress", ["not connected"])) \
        == "in-progress"
    assert classify(BleakDBusError("org.bluez.Error.NotConnected", ["operation in progress"])) \
        == "link-lost"
    assert classify(BleakDBusError("org.freedesktop.DBus.Error.UnknownObject", ["abort"])) \
        == "stale-gatt"
    assert classify(DBusError("org.bluez.Error.InProgress", "le-connection-abort-by-local")) \
        == "in-progress"
    # BlueZ's generic failure is said to be generic, whatever its text suggests
    assert classify(BleakDBusError("org.bluez.Error.Failed", ["le-connection-abort-by-local"])) \
        == "failed"
    # an unknown name is kept, not guessed at
    assert classify(BleakDBusError("org.bluez.Error.Weird", [])) == "dbus:org.bluez.Error.Weird"


def test_text_alone_never_makes_a_kind():
    for text in ("[org.bluez.Error.InProgress] Operation already in progress",
                 "le-connection-abort-by-local", "Device with address X was not found",
                 "org.freedesktop.DBus.Error.UnknownMethod: StartNotify", "Not connected"):
        assert classify(Exception(text)) == "error:Exception", text
        assert classify(BleakError(text)) == "error:BleakError", text


def test_library_classes_and_their_chains():
    assert classify(TimeoutError()) == "timeout"
    assert classify(EOFError()) == "bus-closed"  # dbus-fast: the bus socket closed
    assert classify(StaleGatt("2 instances")) == "stale-gatt"
    assert classify(BleakDeviceNotFoundError(ABSENT, "gone")) == "not-found"
    assert classify(BleakCharacteristicNotFoundError("abcd")) == "stale-gatt"
    assert classify(BleakGATTProtocolError(BleakGATTProtocolErrorCode.READ_NOT_PERMITTED)) \
        == "gatt"
    assert classify(BleakAbortedError("x")) == "connect-aborted"
    assert classify(BleakNotFoundError("x")) == "not-found"
    assert classify(BleakOutOfConnectionSlotsError("x")) == "no-slot"
    assert classify(ValueError("odd")) == "error:ValueError"
    # the retry connector's general wrapper defers to what it wraps
    try:
        try:
            raise BleakDBusError("org.bluez.Error.InProgress", [])
        except BleakDBusError as inner:
            raise BleakConnectionError("left - 00:AA: Failed to connect") from inner
    except BleakConnectionError as outer:
        assert classify(outer) == "in-progress"
    try:
        try:
            raise TimeoutError
        except TimeoutError:
            raise BleakError("while waiting") from None  # no cause kept: nothing specific
    except BleakError as exc:
        assert classify(exc) == "error:BleakError"


def test_every_kind_is_described_and_only_stale_gatt_is_repaired():
    kinds = set(DBUS_NAMES.values()) | {"timeout", "bus-closed", "stale-gatt", "not-found",
                                        "connect-aborted", "no-slot", "no-adapter", "gatt"}
    assert kinds <= set(KINDS)
    assert [k for k in KINDS if needs_repair(k)] == ["stale-gatt"]


# ---------------------------------------------------------------- the real stack

@pytest.fixture(scope="module")
def bluez() -> Iterator[PrivateBluez]:
    if missing_tools():
        pytest.skip(f"needs {missing_tools()}")
    with PrivateBluez([CENTRAL_ADDRESS]) as bz, bz.export():
        yield bz


def test_bluez_over_dbus_fast_raises_by_name_and_it_is_classified(bluez):
    """A device object BlueZ does not have: the bus answers UnknownObject. The name is in
    ``.type``; the message ("Unknown object '...'") would not have matched any pattern."""
    path = bluez_dbus.device_path("hci0", ABSENT)
    with pytest.raises(DBusError) as err:
        run_async(bluez_dbus.call(path, "org.bluez.Device1", "Connect"))
    assert err.value.type == "org.freedesktop.DBus.Error.UnknownObject"
    assert classify(err.value) == "stale-gatt" and needs_repair(classify(err.value))
    assert run_async(bluez_dbus.has_device("hci0", ABSENT)) is False
    with pytest.raises(DBusError) as err:
        run_async(bluez_dbus.call("/org/bluez/hci0", "org.bluez.Adapter1", "NoSuchMethod"))
    assert classify(err.value) == "stale-gatt"
    assert err.value.type == "org.freedesktop.DBus.Error.UnknownMethod"


def test_bleak_connecting_to_a_band_bluez_never_saw_is_not_found(bluez):
    from bleak import BleakClient

    async def connect() -> None:
        async with BleakClient(ABSENT, timeout=1.0, bluez={"adapter": "hci0"}):
            pass  # pragma: no cover - the band does not exist

    with pytest.raises(BleakDeviceNotFoundError) as err:
        run_async(connect())
    assert classify(err.value) == "not-found"
