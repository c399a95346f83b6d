"""The simulated rig starts a private bus, BlueZoo and the bands, and leaves nothing behind."""

from __future__ import annotations

import os

import pytest

from agent import config
from agent.sim.bluez import BUS_ENV, missing_tools
from agent.sim.rig import SimRig

pytestmark = pytest.mark.skipif(bool(missing_tools()), reason=f"needs {missing_tools()}")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_rig_starts_and_stops_cleanly():
    cfg = config.load_default(config.find_profile("sim", "<test>"))
    before = os.environ.get(BUS_ENV)
    with SimRig(cfg) as rig:
        pids = rig.pids()
        assert len(pids) == 2 + len(cfg.wrist)  # dbus-daemon, BlueZoo, one per band
        assert all(_alive(p) for p in pids)
        assert os.environ[BUS_ENV] == rig.address
        st = rig.stats("left")
        assert st["address"] == cfg.wrist[0].address and not st["connected"]
        workdir = rig.bluez.dir
    assert not any(_alive(p) for p in pids)
    assert os.environ.get(BUS_ENV) == before
    assert not workdir.exists()


def test_rig_tears_down_on_exception():
    cfg = config.load_default(config.find_profile("sim", "<test>"))
    pids: list[int] = []
    with pytest.raises(RuntimeError, match="boom"), SimRig(cfg) as rig:
        pids = rig.pids()
        raise RuntimeError("boom")
    assert pids and not any(_alive(p) for p in pids)


def test_bad_band_program_is_a_clear_error():
    cfg = config.load_default(config.find_profile("sim", "<test>"))
    from agent.errors import SourceError

    with pytest.raises(SourceError, match="did not start"), \
            SimRig(cfg, band_args={"left": ["--no-such-flag"]}):
        pass
