"""Sensor profiles: the data-driven description of a wrist band, from device_configs/sensors/.

    load_profile(name) -> SensorProfile        # device_configs/sensors/<name>.toml
    load_profile_file(path) -> SensorProfile

A profile gives the GATT layout (service, notify, control and optional info characteristic),
the command bytes to set the rate / start / stop streaming, and the advertisement rules that
``wearcap pair`` uses to recognise a band. Everything is validated at load; an error names
the file and the key (agent.errors.ConfigError).

Command templates are strings of hex bytes separated by spaces, plus three tokens:
``{rate:u16le}`` (the rate in Hz, 2 bytes LE), ``{rate:code}`` (one byte from the profile's
``rate_codes`` table) and ``"text with {rate}"`` (ASCII, ``{rate}`` as a decimal integer).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.config import REPO_ROOT, read_toml
from agent.errors import ConfigError

SENSOR_DIRS = (REPO_ROOT / "device_configs" / "sensors",
               Path("/usr/share/wearcap/device_configs/sensors"))
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TOKEN_RE = re.compile(r'"[^"]*"|\{rate:u16le\}|\{rate:code\}|[0-9A-Fa-f]{2}')
DEVICE_CLOCKS = ("us", "ns-since-2000", "ms-u32", "none")


@dataclass(frozen=True, slots=True)
class SensorProfile:
    name: str
    description: str
    service_uuid: str
    notify_uuid: str
    control_uuid: str
    info_uuid: str | None
    name_prefixes: tuple[str, ...]
    adv_service_uuids: tuple[str, ...]
    rates_hz: tuple[float, ...]
    """Rates the band accepts (empty: any rate in 1..2000 Hz)."""
    rate_codes: dict[str, int] = field(default_factory=dict)
    set_rate: tuple[str, ...] = ()
    start: tuple[str, ...] = ()
    stop: tuple[str, ...] = ()
    acc_scale: float = 1.0
    """Default m/s^2 per count (a band's info characteristic may override it)."""
    gyro_scale: float = 1.0
    """Default rad/s per count."""
    device_clock: str = "none"
    samples_per_packet: int = 1
    """What the band's firmware packs into one notification (used by the simulator)."""
    latency_ns: int = 1_700_000
    """Default transport latency (connection event -> the agent), ``[timing] latency_ms``;
    a band's ``[[wrist]] latency_ms`` overrides it (agent.wrist.timing)."""
    latency_uncertainty_ns: int = 1_500_000
    """Half-width of the range the true latency may be in (``latency_uncertainty_ms``)."""
    path: str = ""

    def pick_rate(self, rate_hz: float) -> float:
        """The supported rate closest to ``rate_hz``."""
        if not self.rates_hz:
            return float(rate_hz)
        return min(self.rates_hz, key=lambda r: (abs(r - rate_hz), r))

    def rate_commands(self, rate_hz: float) -> list[bytes]:
        return [render(t, self.pick_rate(rate_hz), self.rate_codes) for t in self.set_rate]

    def start_commands(self, rate_hz: float) -> list[bytes]:
        return [render(t, self.pick_rate(rate_hz), self.rate_codes) for t in self.start]

    def stop_commands(self) -> list[bytes]:
        rate = self.rates_hz[0] if self.rates_hz else 1.0
        return [render(t, rate, self.rate_codes) for t in self.stop]

    def matches_advertisement(self, name: str | None, service_uuids: list[str]) -> bool:
        """Whether an advertising device looks like this kind of band."""
        uuids = {u.lower() for u in service_uuids}
        if any(u in uuids for u in self.adv_service_uuids):
            return True
        return bool(name) and any(name.startswith(p) for p in self.name_prefixes)  # type: ignore[union-attr]


def _rate_key(rate: float) -> str:
    return f"{rate:g}"


def render(template: str, rate_hz: float, codes: dict[str, int]) -> bytes:
    """Bytes of one command template at ``rate_hz`` (raises ValueError)."""
    out = bytearray()
    pos = 0
    for m in TOKEN_RE.finditer(template):
        if template[pos:m.start()].strip():
            raise ValueError(f"cannot read {template[pos:m.start()].strip()!r}")
        tok = m.group(0)
        if tok == "{rate:u16le}":
            out += struct.pack("<H", round(rate_hz))
        elif tok == "{rate:code}":
            key = _rate_key(rate_hz)
            if key not in codes:
                raise ValueError(f"no rate code for {key} Hz")
            out.append(codes[key])
        elif tok.startswith('"'):
            out += tok[1:-1].replace("{rate}", str(round(rate_hz))).encode("ascii")
        else:
            out.append(int(tok, 16))
        pos = m.end()
    if template[pos:].strip():
        raise ValueError(f"cannot read {template[pos:].strip()!r}")
    return bytes(out)


_SECTIONS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "": {"name": str, "description": str, "device_clock": str, "samples_per_packet": int},
    "gatt": {"service": str, "notify": str, "control": str, "info": str},
    "advertisement": {"name_prefixes": list, "service_uuids": list},
    "rates": {"hz": list, "codes": dict},
    "commands": {"set_rate": list, "start": list, "stop": list},
    "scales": {"acc": (int, float), "gyro": (int, float)},
    "timing": {"latency_ms": (int, float), "latency_uncertainty_ms": (int, float)},
}
_REQUIRED = {"name", "gatt.service", "gatt.notify", "gatt.control", "scales.acc", "scales.gyro"}


def _flatten(path: str, data: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key in _SECTIONS and key:
            for sub, v in value.items():
                flat[f"{key}.{sub}"] = v
        else:
            flat[key] = value
    for dotted, value in flat.items():
        section, _, key = dotted.rpartition(".")
        allowed = _SECTIONS.get(section, {})
        if key not in allowed:
            raise ConfigError(path, dotted, "unknown key",
                              allowed=", ".join(f"{section}.{k}".lstrip(".") for k in allowed)
                              or ", ".join(k for k in _SECTIONS if k))
        tp = allowed[key]
        if isinstance(value, bool) or not isinstance(value, tp):
            raise ConfigError(path, dotted, "wrong type", value=value)
    for req in sorted(_REQUIRED - flat.keys()):
        raise ConfigError(path, req, "missing")
    return flat


def _uuid(path: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not UUID_RE.fullmatch(value.lower()):
        raise ConfigError(path, key, "not a 128-bit UUID", value=value,
                          allowed="xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx (hex)")
    return value.lower()


def _strings(path: str, key: str, value: list[Any]) -> tuple[str, ...]:
    if not all(isinstance(v, str) for v in value):
        raise ConfigError(path, key, "must be a list of strings", value=value)
    return tuple(value)


def load_profile_file(file: str | Path) -> SensorProfile:
    path = str(file)
    f = _flatten(path, read_toml(Path(file)))
    clock = f.get("device_clock", "none")
    if clock not in DEVICE_CLOCKS:
        raise ConfigError(path, "device_clock", "not one of the choices", value=clock,
                          allowed=", ".join(DEVICE_CLOCKS))
    rates: list[float] = []
    for i, r in enumerate(f.get("rates.hz", [])):
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r <= 2000:
            raise ConfigError(path, f"rates.hz[{i}]", "not a rate in Hz", value=r,
                              allowed="0 < rate <= 2000")
        rates.append(float(r))
    codes: dict[str, int] = {}
    for k, v in f.get("rates.codes", {}).items():
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 255:
            raise ConfigError(path, f"rates.codes.{k}", "not a byte", value=v, allowed="0..255")
        codes[k] = v
    for key in ("scales.acc", "scales.gyro"):
        if not f[key] > 0:
            raise ConfigError(path, key, "must be positive", value=f[key])
    for key in ("timing.latency_ms", "timing.latency_uncertainty_ms"):
        if key in f and not 0 <= f[key] <= 100:
            raise ConfigError(path, key, "out of range", value=f[key], allowed="0..100 ms")
    spp = f.get("samples_per_packet", 1)
    if not 1 <= spp <= 255:
        raise ConfigError(path, "samples_per_packet", "out of range", value=spp, allowed="1..255")
    prof = SensorProfile(
        name=f["name"],
        description=f.get("description", ""),
        service_uuid=_uuid(path, "gatt.service", f["gatt.service"]),
        notify_uuid=_uuid(path, "gatt.notify", f["gatt.notify"]),
        control_uuid=_uuid(path, "gatt.control", f["gatt.control"]),
        info_uuid=_uuid(path, "gatt.info", f["gatt.info"]) if "gatt.info" in f else None,
        name_prefixes=_strings(path, "advertisement.name_prefixes",
                               f.get("advertisement.name_prefixes", [])),
        adv_service_uuids=tuple(
            _uuid(path, f"advertisement.service_uuids[{i}]", u)
            for i, u in enumerate(f.get("advertisement.service_uuids", []))),
        rates_hz=tuple(rates),
        rate_codes=codes,
        set_rate=_strings(path, "commands.set_rate", f.get("commands.set_rate", [])),
        start=_strings(path, "commands.start", f.get("commands.start", [])),
        stop=_strings(path, "commands.stop", f.get("commands.stop", [])),
        acc_scale=float(f["scales.acc"]),
        gyro_scale=float(f["scales.gyro"]),
        device_clock=clock,
        samples_per_packet=spp,
        latency_ns=round(f.get("timing.latency_ms", 1.7) * 1e6),
        latency_uncertainty_ns=round(f.get("timing.latency_uncertainty_ms", 1.5) * 1e6),
        path=path,
    )
    if not prof.name_prefixes and not prof.adv_service_uuids:
        raise ConfigError(path, "advertisement", "needs name_prefixes or service_uuids")
    probe = rates or [50.0]
    for key in ("set_rate", "start", "stop"):
        for i, t in enumerate(getattr(prof, key)):
            for r in probe:
                try:
                    render(t, r, codes)
                except ValueError as exc:
                    raise ConfigError(path, f"commands.{key}[{i}]", str(exc), value=t) from None
    return prof


def known_profiles() -> list[str]:
    return sorted({p.stem for d in SENSOR_DIRS if d.is_dir() for p in d.glob("*.toml")})


def load_profile(name: str) -> SensorProfile:
    """Load ``device_configs/sensors/<name>.toml`` (ConfigError if absent or invalid)."""
    if re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name):
        for d in SENSOR_DIRS:
            p = d / f"{name}.toml"
            if p.is_file():
                return load_profile_file(p)
    raise ConfigError(str(SENSOR_DIRS[0]), "profile", "no such sensor profile", value=name,
                      allowed=", ".join(known_profiles()))
