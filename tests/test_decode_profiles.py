"""Sensor profiles load, render their commands, match advertisements, and reject bad files."""

from __future__ import annotations

import pytest

from agent.errors import ConfigError
from agent.wrist.decode import PROFILES
from agent.wrist.profiles import known_profiles, load_profile, load_profile_file

GOOD = (load_profile("wearcap-open").path)


def test_all_profiles_load():
    assert set(PROFILES) <= set(known_profiles())
    polar = load_profile("polar-pmd")
    assert polar.pick_rate(200) == 208
    assert polar.start_commands(200)[0][:6] == bytes.fromhex("020200 01d000".replace(" ", ""))
    assert polar.matches_advertisement("Polar Sense B5", [])
    assert load_profile("movesense").matches_advertisement(
        None, ["34802252-7185-4d5d-b431-630e7050e8f0"])
    assert not load_profile("witmotion").matches_advertisement("Polar Sense", [])


@pytest.mark.parametrize("edit,key", [
    (("[gatt]", "[gatt]\nbogus = 1"), "gatt.bogus"),
    (('service = "2ccb0001', 'service = "zz'), "gatt.service"),
    (('start = ["01"]', 'start = ["0g"]'), "commands.start[0]"),
    (("acc = 0.0047884033203125", "acc = -1.0"), "scales.acc"),
    (('device_clock = "us"', 'device_clock = "hours"'), "device_clock"),
    (('name = "wearcap-open"', ""), "name"),
])
def test_bad_profiles_name_file_and_key(tmp_path, edit, key):
    with open(GOOD) as fh:
        text = fh.read()
    assert edit[0] in text
    p = tmp_path / "bad.toml"
    p.write_text(text.replace(edit[0], edit[1], 1))
    with pytest.raises(ConfigError) as ei:
        load_profile_file(p)
    assert ei.value.key == key and ei.value.path == str(p)


def test_unknown_profile():
    with pytest.raises(ConfigError, match="no such sensor profile"):
        load_profile("nope")
