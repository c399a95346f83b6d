"""The D-Bus objects a simulated band exports to the private BlueZ: GATT characteristics and
services (``org.bluez.GattCharacteristic1`` / ``GattService1``) and its LE advertisement
(``org.bluez.LEAdvertisement1``). The band program (``agent.sim.peripheral``) owns them and
receives their writes and notification switches through ``GattHandler``.
"""

# No ``from __future__ import annotations`` here: dbus-fast reads the D-Bus signatures from
# the annotations ("s", "ay", "a{sv}") at class creation, which linters read as names.
# ruff: noqa: F821, F722
# mypy: disable-error-code="name-defined, valid-type, no-untyped-def, misc, attr-defined"

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
