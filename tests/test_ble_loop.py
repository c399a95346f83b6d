"""The shared BLE loop: its kind (uvloop where installed) and the time requests' sleep."""

from __future__ import annotations

import asyncio
import importlib

import pytest

from agent.wrist import ble_loop


def test_the_shared_loop_is_uvloop_and_runs_coroutines_from_other_threads():
    uvloop = pytest.importorskip("uvloop") if not _ci() else importlib.import_module("uvloop")
    assert ble_loop.LOOP == "uvloop"
    shared = ble_loop.acquire()
    try:
        assert isinstance(shared.loop, uvloop.Loop)

        async def name() -> str:
            await asyncio.sleep(0)
            return "ran"

        assert shared.submit(name()).result(10) == "ran"
    finally:
        ble_loop.release(shared)
    assert not shared.alive


def test_the_environment_can_keep_asyncios_loop(monkeypatch):
    monkeypatch.setenv("WEARCAP_BLE_LOOP", "asyncio")
    assert ble_loop._loop_kind() == "asyncio"
    monkeypatch.setattr(ble_loop, "LOOP", "asyncio")
    loop = ble_loop.new_loop()
    try:
        assert type(loop).__module__.startswith("asyncio")
    finally:
        loop.close()


@pytest.mark.parametrize(("seconds", "slept"), [(0.0003, 0.001), (0.0, 0.0), (-1.0, 0.0),
                                                (0.0121, 0.013), (0.5, 0.5)])
def test_time_request_sleeps_round_up_to_whole_milliseconds(monkeypatch, seconds, slept):
    asked: list[float] = []

    async def fake_sleep(s: float) -> None:
        asked.append(s)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    asyncio.run(ble_loop.sleep_ms_up(seconds))
    assert asked == [pytest.approx(slept)]


def _ci() -> bool:
    import os

    return os.environ.get("CI", "").lower() == "true"
