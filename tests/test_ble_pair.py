"""wearcap pair on the simulated rig: scan, list, pick, write the config without losing it."""

from __future__ import annotations

import json

import pytest

from agent import config
from agent.sim.bluez import missing_tools
from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.skipif(bool(missing_tools()), reason=f"needs {missing_tools()}")


def test_pair_lists_bands_and_writes_the_config(tmp_path):
    cfg = tmp_path / "agent.toml"
    cfg.write_text('# my rig\nprofile = "sim"\n\n[device]\nid = "rig-7"\n\n[[wrist]]\n'
                   'name = "left"\naddress = "00:AA:BB:CC:DD:09"  # strap no. 4\n'
                   'rate_hz = 100  # slow\n')
    r = run_cli("pair", "--config", str(cfg), "--scan-seconds", "1", "--json", "--write")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    # one [[wrist]] in the file: the simulated rig runs one band (at the address the file
    # names), pair fills one slot
    assert [(b["address"], b["profile"]) for b in out["bands"]] == [
        ("00:AA:BB:CC:DD:09", "wearcap-open")]
    assert out["picked"] == ["00:AA:BB:CC:DD:09"]
    text = cfg.read_text()
    assert "# my rig" in text and "rate_hz = 100  # slow" in text and 'id = "rig-7"' in text
    assert 'address = "00:AA:BB:CC:DD:09"  # strap no. 4' in text  # its comment kept
    loaded = config.load(cfg)
    assert len(loaded.wrist) == 1
    assert loaded.wrist[0].address == "00:AA:BB:CC:DD:09" and loaded.wrist[0].rate_hz == 100


def test_pair_without_an_adapter_is_a_clear_error(tmp_path):
    cfg = tmp_path / "agent.toml"
    cfg.write_text((REPO / "device_configs" / "sim.toml").read_text()
                   .replace('adapter = "hci0"', 'adapter = "hci9"'))
    r = run_cli("pair", "--config", str(cfg), "--scan-seconds", "1")
    assert r.returncode == 1
    assert r.stderr.startswith("wearcap: error:") and "hci9" in r.stderr
    assert "Traceback" not in r.stderr


def test_write_bands_rewrites_an_address_keeping_its_comment(tmp_path):
    from agent.commands.pair import write_bands

    cfg = tmp_path / "agent.toml"
    cfg.write_text('profile = "sim"\n\n[[wrist]]\nname = "left"\n'
                   '  address = "00:AA:BB:CC:DD:09"   # strap no. 4 # spare\n')
    write_bands(cfg, [{"address": "00:AA:BB:CC:DD:07", "profile": "polar-pmd"}], ["left"])
    text = cfg.read_text()
    assert '  address = "00:AA:BB:CC:DD:07"   # strap no. 4 # spare\n' in text
    assert config.load(cfg).wrist[0].profile == "polar-pmd"


def test_pair_picks_the_two_nearest_among_four_bands(tmp_path):
    """Four simulated bands in range, each at its own RSSI (agent.sim.radio): pair lists each
    at the RSSI the rig sees and picks the two strongest, whatever their order or address."""
    from agent.sim.rig import sim_address

    cfg = tmp_path / "agent.toml"
    cfg.write_text('profile = "sim"\n[device]\nid = "rig-8"\n'
                   '[[wrist]]\nname = "left"\n[[wrist]]\nname = "right"\n'
                   '[sim]\nband_rssi_dbm = [-80, -45]\nneighbour_rssi_dbm = [-52, -90]\n')
    text = run_cli("pair", "--config", str(cfg), "--scan-seconds", "2")
    marked = [ln.split()[1] for ln in text.stdout.splitlines() if ln.startswith("*")]
    assert marked == [sim_address(1), sim_address(2)], text.stdout
    assert "-45 dBm" in text.stdout and "-90 dBm" in text.stdout
    r = run_cli("pair", "--config", str(cfg), "--scan-seconds", "2", "--json", "--write")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    seen = {b["address"]: b["rssi"] for b in out["bands"]}
    assert seen == {sim_address(0): -80, sim_address(1): -45, sim_address(2): -52,
                    sim_address(3): -90}
    assert out["picked"] == [sim_address(1), sim_address(2)]  # nearest first
    loaded = config.load(cfg)
    assert [w.address for w in loaded.wrist] == [sim_address(1), sim_address(2)]
