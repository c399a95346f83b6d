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
                   'name = "left"\nrate_hz = 100  # slow\n')
    r = run_cli("pair", "--config", str(cfg), "--scan-seconds", "1", "--json", "--write")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    # one [[wrist]] in the file: the simulated rig runs one band, pair fills one slot
    assert [(b["address"], b["profile"]) for b in out["bands"]] == [
        ("00:AA:BB:CC:DD:01", "wearcap-open")]
    assert out["picked"] == ["00:AA:BB:CC:DD:01"]
    text = cfg.read_text()
    assert "# my rig" in text and "rate_hz = 100  # slow" in text and 'id = "rig-7"' in text
    loaded = config.load(cfg)
    assert len(loaded.wrist) == 1
    assert loaded.wrist[0].address == "00:AA:BB:CC:DD:01" and loaded.wrist[0].rate_hz == 100


def test_pair_without_an_adapter_is_a_clear_error(tmp_path):
    cfg = tmp_path / "agent.toml"
    cfg.write_text((REPO / "device_configs" / "sim.toml").read_text()
                   .replace('adapter = "hci0"', 'adapter = "hci9"'))
    r = run_cli("pair", "--config", str(cfg), "--scan-seconds", "1")
    assert r.returncode == 1
    assert r.stderr.startswith("wearcap: error:") and "hci9" in r.stderr
    assert "Traceback" not in r.stderr
