"""The radio path of the simulated rig: what RSSI the rig's adapter sees for each band.

BlueZoo (the user-space BlueZ of agent.sim.bluez) reports every device at 0 dBm, so the
nearest band cannot be told from the others. This runs BlueZoo, in its own process as before,
with each discovered device's RSSI taken from a JSON file ``{"ADDRESS": dBm}`` (the band's
adapter address). The file is read at every scan, so a test can move a band nearer or further
while the rig runs. An address not in the file keeps BlueZoo's 0 dBm.

    python -m agent.sim.radio --rssi-file F [bluezoo arguments]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def load(path: Path) -> dict[str, int]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k).upper(): int(v) for k, v in data.items() if isinstance(v, (int, float))}


def patch(rssi_file: Path) -> None:
    """Give BlueZoo's discovered devices the RSSI of the file (new devices and rescans)."""
    from bluezoo import device

    init = device.Device.__init__
    sync = device.Device.properties_sync

    def __init__(self: Any, peer_adapter: Any, **kwargs: Any) -> None:
        init(self, peer_adapter, **kwargs)
        self.rssi = load(rssi_file).get(str(peer_adapter.address).upper(), self.rssi)

    async def properties_sync(self: Any, other: Any) -> None:
        await sync(self, other)
        self.rssi = other.rssi  # read through the property at the next GetManagedObjects

    device.Device.__init__ = __init__
    device.Device.properties_sync = properties_sync


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "--rssi-file":
        print("usage: python -m agent.sim.radio --rssi-file F [bluezoo arguments]",
              file=sys.stderr)
        return 2
    patch(Path(argv[1]))
    from bluezoo import bluezoo

    sys.argv = ["bluezoo", *argv[2:]]
    return int(bluezoo.main() or 0)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
