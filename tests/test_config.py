from __future__ import annotations

from pathlib import Path

import pytest

from agent import config
from agent.errors import ConfigError
from tests.conftest import REPO, run_cli

PROFILES = sorted((REPO / "device_configs").glob("*.toml"))


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.stem)
def test_every_shipped_profile_loads(path: Path) -> None:
    cfg = config.load(path)
    assert cfg.sources == (str(path),)
    assert len(cfg.digest()) == 64


def test_device_local_file_layers_over_profile(tmp_path: Path) -> None:
    local = tmp_path / "agent.toml"
    local.write_text('profile = "pi5-imx708"\n[device]\nid = "rig-7"\n[segment]\nseconds = 30\n'
                     '[sync]\nurl = "https://c.example/files/"\n')
    cfg = config.load(local)
    assert cfg.profile == "pi5-imx708"
    assert cfg.device.id == "rig-7"
    assert cfg.segment.seconds == 30.0
    assert cfg.camera.backend == "picamera2"  # from the profile
    assert cfg.sources[-1] == str(local)


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("[camera]\nfps = 0\n", "camera.fps", "out of range"),
        ("[camera]\nfps = 'fast'\n", "camera.fps", "wrong type"),
        ("[camera]\nencoder = 'x265'\n", "camera.encoder", "libx264"),
        ("[camra]\nfps = 3\n", "camra", "allowed: profile, device"),
        ("[device]\nid = 'a b'\n", "device.id", "pattern"),
        ("profile = 'nope'\n", "profile", "sim"),
        ("[[wrist]]\nname='l'\naddress='zz'\n", "wrist[0].address", "pattern"),
        ("[sim]\ninterval_ms = [50.0, 7.5]\n", "sim.interval_ms", "[low, high]"),
        ("[camera\n", "", "not valid TOML"),
    ],
)
def test_bad_config_names_file_key_and_allowed(tmp_path: Path, text: str, key: str,
                                               fragment: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        config.load(f)
    assert info.value.path == str(f)
    assert info.value.key == key
    assert fragment in str(info.value)


def test_error_names_the_layer_that_set_the_key(tmp_path: Path) -> None:
    local = tmp_path / "agent.toml"
    local.write_text('profile = "sim"\n[camera]\nwidth = 3\n')
    with pytest.raises(ConfigError) as info:
        config.load(local)
    assert info.value.path == str(local)


def test_config_check_cli_exit_codes(tmp_path: Path) -> None:
    ok = run_cli("config", "check", str(REPO / "device_configs" / "sim.toml"))
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[segment]\nseconds = -1\n")
    res = run_cli("config", "check", str(bad))
    assert res.returncode == 2
    assert str(bad) in res.stdout + res.stderr
    assert "segment.seconds" in res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr


@pytest.mark.parametrize(
    ("text", "key", "fix"),
    [
        ('profile = "pi5-imx708"\n', "device.id", "wearcap provision"),
        ('profile = "pi5-imx708"\n[device]\nid = "rig-9"\n', "sync.url", "[sync]"),
        ('[device]\nid = "rig-9"\n[sync]\nurl = "https://c.example/files/"\n', "profile",
         'profile = "pi5-imx708"'),
    ],
)
def test_a_rig_config_must_name_its_profile_id_and_collector(
        tmp_path: Path, text: str, key: str, fix: str) -> None:
    """Off the simulated rig the simulated rig's defaults (sim-0001, the loopback collector,
    the test pattern) are an error with the fix, in `config check` as everywhere."""
    local = tmp_path / "agent.toml"
    local.write_text(text)
    with pytest.raises(ConfigError) as info:
        config.load(local)
    assert info.value.key == key
    assert fix in str(info.value)
    res = run_cli("config", "check", str(local))
    assert res.returncode == 2
    assert key in res.stdout and "Traceback" not in res.stdout + res.stderr


def test_a_complete_rig_config_and_the_simulated_rig_load(tmp_path: Path) -> None:
    local = tmp_path / "agent.toml"
    local.write_text('profile = "pi5-imx708"\n[device]\nid = "rig-9"\n'
                     '[sync]\nurl = "https://c.example/files/"\n')
    assert config.load(local).device.id == "rig-9"
    sim = tmp_path / "sim-local.toml"
    sim.write_text('profile = "sim"\n')
    assert config.load(sim).device.id == "sim-0001"
