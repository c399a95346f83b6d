"""Unwrap a device counter that wraps (Movesense's uint32 ms timestamps wrap every ~49.7 days)."""

from __future__ import annotations


class Unwrapper:
    """Turn a wrapping counter of ``bits`` bits, in units of ``unit_ns``, into monotonic ns.

    A step backwards by more than half the range is a wrap; a smaller step backwards (a late
    or reordered packet) is kept in the current epoch.
    """

    def __init__(self, bits: int, unit_ns: int) -> None:
        self.modulus = 1 << bits
        self.unit_ns = unit_ns
        self.epoch = 0
        self._last: int | None = None
        self.wraps = 0

    def __call__(self, raw: int) -> int:
        raw %= self.modulus
        if self._last is not None:
            if raw < self._last and self._last - raw > self.modulus // 2:
                self.epoch += 1
                self.wraps += 1
            elif raw > self._last and raw - self._last > self.modulus // 2 and self.epoch:
                return ((self.epoch - 1) * self.modulus + raw) * self.unit_ns  # late, pre-wrap
        self._last = raw
        return (self.epoch * self.modulus + raw) * self.unit_ns

    def reset(self) -> None:
        self.epoch = 0
        self._last = None
