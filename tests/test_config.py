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
    local.write_text('profile = "pi5-imx708"\n[device]\nid = "rig-7"\n[segment]\nseconds = 30\n')
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
