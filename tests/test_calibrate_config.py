"""wearcap calibrate writes a band's latency into its own [[wrist]] table, keeping the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import config
from agent.cli import main
from agent.commands.calibrate_config import config_target, write_latency
from agent.errors import ConfigError

RIG = """\
# the rig's own config: comments and layout must survive a calibration
profile = "sim"

[[wrist]]
name = "left"   # on the left wrist
address = "00:AA:BB:CC:DD:01"
profile = "movesense"
rate_hz = 208

[[wrist]]
name = "right"
address = "00:AA:BB:CC:DD:02"
profile = "movesense"
rate_hz = 208
latency_ms = 2.0  # measured last spring

[mcu]
enabled = true
"""


def rig(tmp_path: Path, text: str = RIG) -> Path:
    p = tmp_path / "rig.toml"
    p.write_text(text)
    return p


def test_writes_only_that_bands_three_keys(tmp_path):
    p = rig(tmp_path)
    write_latency(config_target(config.load(p)), "right", 1.234, 0.456)
    text = p.read_text()
    assert "# the rig's own config" in text and "# on the left wrist" in text
    assert "latency_ms = 1.234  # measured last spring" in text
    cfg = config.load(p)
    left, right = cfg.wrist
    assert (right.latency_ms, right.latency_uncertainty_ms) == (1.234, 0.456)
    assert right.latency_source == "calibrated"
    assert (left.latency_ms, left.latency_uncertainty_ms) == (-1.0, -1.0)
    assert left.latency_source == "config"
    assert text.replace("latency_ms = 1.234  # measured last spring\n"
                        "latency_uncertainty_ms = 0.456\nlatency_source = \"calibrated\"\n",
                        "") == RIG.replace(
        "latency_ms = 2.0  # measured last spring\n", "")
    assert not [f for f in tmp_path.iterdir() if f.name != "rig.toml"]  # no temp left


def test_the_bound_uses_the_written_setting(tmp_path):
    from agent.wrist.timing import band_latency

    p = rig(tmp_path)
    before = band_latency(config.load(p).wrist[0])
    write_latency(p, "left", 0.9, 0.35)
    after = band_latency(config.load(p).wrist[0])
    assert before.source == "profile" and after.source == "calibrated"
    assert (after.ns, after.uncertainty_ns) == (900_000, 350_000)
    assert after.uncertainty_ns < before.uncertainty_ns
    # set by hand (no latency_source): "config"
    p.write_text(p.read_text().replace('latency_source = "calibrated"\n', ""))
    assert band_latency(config.load(p).wrist[0]).source == "config"


def test_a_shipped_profile_is_never_the_target(tmp_path):
    cfg = config.load(Path("device_configs/sim.toml"))
    with pytest.raises(ConfigError, match="shipped profile"):
        config_target(cfg)
    p = rig(tmp_path, 'profile = "sim"\n')  # its bands come from sim.toml
    with pytest.raises(ConfigError, match="shipped profile"):
        config_target(config.load(p))


def test_an_unknown_band_is_a_clear_error(tmp_path, capsys):
    p = rig(tmp_path)
    with pytest.raises(ConfigError, match="no \\[\\[wrist\\]\\] table with name = 'middle'"):
        write_latency(p, "middle", 1.0, 0.5)
    assert main(["calibrate", "--config", str(p), "--band", "middle", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "no band 'middle'" in err and "left (00:AA:BB:CC:DD:01)" in err
    assert main(["calibrate", "--config", str(p), "--dry-run"]) == 2
    assert "say which with --band" in capsys.readouterr().err


def test_no_mcu_and_unreadable_segments_are_clear_errors(tmp_path, capsys):
    p = rig(tmp_path, RIG.replace("enabled = true", "enabled = false"))
    assert main(["calibrate", "--config", str(p), "--band", "left"]) == 1
    assert "needs the head MCU" in capsys.readouterr().err
    bad = tmp_path / "bad.mcap"
    bad.write_bytes(b"not an mcap file at all")
    assert main(["calibrate", "--config", str(p), "--band", "left", "--from", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "not a readable recording segment" in err and "Traceback" not in err
    assert main(["calibrate", "--config", str(p), "--band", "left", "--from",
                 str(tmp_path / "none.mcap")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert p.read_text() == RIG.replace("enabled = true", "enabled = false")  # untouched
