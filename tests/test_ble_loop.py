"""The shared BLE loop: its kind (uvloop where installed) and the time requests' sleep."""

from __future__ import annotations

import asyncio
import importlib
import time

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


def test_on_asyncios_loop_the_time_requests_sleep_as_they_always_did(monkeypatch):
    asked: list[float] = []

    async def fake_sleep(s: float) -> None:
        asked.append(s)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    for wait_ns in (12_345_678, 0, -5):
        asyncio.run(ble_loop.sleep_ns(wait_ns))
    assert asked == [pytest.approx(0.012345678), 0.0, 0.0]


def test_on_uvloop_the_time_requests_aim_at_the_instant_itself():
    """uvloop's sleep counts a rounded delay from the last whole millisecond (early by up to
    1.5 ms); sleep_ns asks its call_at for the instant on the monotonic clock instead."""
    uvloop = pytest.importorskip("uvloop") if not _ci() else importlib.import_module("uvloop")
    whens: list[float] = []

    class Loop(uvloop.Loop):  # type: ignore[misc,name-defined]
        def call_at(self, when, callback, *args, context=None):
            whens.append(when)
            return super().call_at(when, callback, *args, context=context)

    loop = Loop()
    try:
        before = time.monotonic()
        loop.run_until_complete(ble_loop.sleep_ns(3_000_000))
        after = time.monotonic()
        loop.run_until_complete(ble_loop.sleep_ns(0))  # no timer: just a yield
    finally:
        loop.close()
    assert len(whens) == 1
    assert before + 0.003 <= whens[0] <= after + 0.003  # asked at a time in between


def _ci() -> bool:
    import os

    return os.environ.get("CI", "").lower() == "true"
