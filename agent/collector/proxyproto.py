"""The PROXY protocol header (v1 text and v2 binary), sans-IO: bytes in, the client address out.

A load balancer (HAProxy ``send-proxy``/``send-proxy-v2``, nginx ``proxy_protocol on``) puts
this header in front of the HTTP bytes so the collector learns the real client address. Only
connections from configured proxy addresses may send it, and from those it is required:
otherwise any client could claim any address.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Final

V1_MAX: Final = 107
V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
V2_MAX_BODY: Final = 512


class ProxyHeaderError(ValueError):
    """Not a valid PROXY protocol header."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    consumed: int
    """Bytes of the header; the HTTP request starts after them."""
    client: tuple[str, int] | None
    """The original client (None for ``UNKNOWN``/``LOCAL``: keep the peer address)."""


def parse(data: bytes) -> ProxyHeader | None:
    """The header at the start of ``data``, None if more bytes are needed, else an error."""
    if data[:1] == b"P":
        return _v1(data)
    if data[:1] == b"\r":
        return _v2(data)
    if data:
        raise ProxyHeaderError("connection from a proxy does not start with a PROXY header")
    return None


def _v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX or not b"PROXY "[: len(data)].startswith(data[:6]):
            raise ProxyHeaderError("PROXY v1 header too long or malformed")
        return None
    parts = data[:end].split(b" ")
    if parts[0] != b"PROXY" or len(parts) < 2:
        raise ProxyHeaderError("malformed PROXY v1 header")
    if parts[1] == b"UNKNOWN":
        return ProxyHeader(end + 2, None)
    if parts[1] not in (b"TCP4", b"TCP6") or len(parts) != 6:
        raise ProxyHeaderError("malformed PROXY v1 header")
    try:
        addr = ipaddress.ip_address(parts[2].decode("ascii"))
        port = int(parts[4])
    except (UnicodeDecodeError, ValueError):
        raise ProxyHeaderError("malformed PROXY v1 address") from None
    if (addr.version == 4) != (parts[1] == b"TCP4") or not 0 <= port <= 65535 \
            or not parts[4].isdigit():
        raise ProxyHeaderError("malformed PROXY v1 address")
    return ProxyHeader(end + 2, (str(addr), port))


def _v2(data: bytes) -> ProxyHeader | None:
    n = min(len(data), len(V2_SIGNATURE))
    if data[:n] != V2_SIGNATURE[:n]:
        raise ProxyHeaderError("malformed PROXY v2 signature")
    if len(data) < 16:
        return None
    ver_cmd, fam, length = data[12], data[13], struct.unpack("!H", data[14:16])[0]
    if ver_cmd >> 4 != 2 or length > V2_MAX_BODY:
        raise ProxyHeaderError("unsupported PROXY v2 header")
    if len(data) < 16 + length:
        return None
    body = data[16:16 + length]
    consumed = 16 + length
    if ver_cmd & 0xF == 0:  # LOCAL: the proxy's own health check
        return ProxyHeader(consumed, None)
    if ver_cmd & 0xF != 1:
        raise ProxyHeaderError("unsupported PROXY v2 command")
    if fam >> 4 == 1 and len(body) >= 12:
        src = str(ipaddress.IPv4Address(body[0:4]))
        return ProxyHeader(consumed, (src, struct.unpack("!H", body[8:10])[0]))
    if fam >> 4 == 2 and len(body) >= 36:
        src = str(ipaddress.IPv6Address(body[0:16]))
        return ProxyHeader(consumed, (src, struct.unpack("!H", body[32:34])[0]))
    return ProxyHeader(consumed, None)  # UNSPEC or AF_UNIX: keep the peer address


def v1_header(client: tuple[str, int], server: tuple[str, int]) -> bytes:
    """A v1 header (for tests and the load harness)."""
    fam = "TCP6" if ":" in client[0] else "TCP4"
    return f"PROXY {fam} {client[0]} {server[0]} {client[1]} {server[1]}\r\n".encode()
