"""One battery reading from the head MCU, sans-IO (docs/mcu-protocol.md, "Battery query").

    q = BatteryQuery()
    port.write(q.opening())                 # hello_request
    for chunk in reads:
        port.write(q.feed(chunk))           # accept, once a compatible hello came
        if q.result is not None: break      # a Battery message, after the hello

The host that opens the port after capture released it knows nothing of what came before:
data frames are taken only after a compatible hello (as capture does), and the MCU sends a
battery report right after each accept, so the answer takes one round trip, not the 10 s
of the gauge's cadence. ``incompatible`` names a hello of another major version.
"""

from __future__ import annotations

from agent.mcu import protocol as p


class BatteryQuery:
    def __init__(self) -> None:
        self.decoder = p.Decoder()
        self.hello: p.Hello | None = None
        self.result: p.Battery | None = None
        self.incompatible = ""
        self._seq = 0

    def _next(self) -> int:
        s = self._seq
        self._seq = (s + 1) % p.SEQ_MOD
        return s

    def opening(self) -> bytes:
        return p.encode(p.HelloRequest(self._next()))

    def closing(self) -> bytes:
        """``bye``: the query stops on purpose, so the MCU keeps its pattern."""
        return p.encode(p.Bye(self._next()))

    def feed(self, data: bytes) -> bytes:
        """Bytes read from the port in; bytes to write back out (possibly empty)."""
        out = b""
        for m in self.decoder.feed(data):
            if isinstance(m, p.Hello):
                if m.major != p.PROTO_MAJOR:
                    self.incompatible = (f"MCU speaks protocol {m.major}.{m.minor}; this "
                                         f"agent speaks {p.PROTO_MAJOR}.x")
                    continue
                self.incompatible = ""
                self.hello = m  # every hello is answered: the MCU repeats it until accepted
                out += p.encode(p.Accept(self._next(), p.PROTO_MAJOR,
                                         min(m.minor, p.PROTO_MINOR)))
            elif isinstance(m, p.Battery) and self.hello is not None and self.result is None:
                self.result = m
        return out
