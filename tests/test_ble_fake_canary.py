"""The canary that holds the fake BLE link (tests/fakes/ble_link.py) to the real one
(agent.wrist.ble.BleLink), as tests/test_camera_pi.py holds the picamera2 fake to picamera2.

Both must satisfy ``agent.wrist.link.Link`` (and, as classes, ``LinkFactory``); every public
method, property and constructor parameter of the fake must exist in the real class with the
same kind and default; every event kind the fake emits must be one the real link emits; and
the fake's lifecycle must be the real table. A fake that drifts fails here, not in a
recording on a band."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any

from agent.config import BleSection, WristBand
from agent.wrist import ble
from agent.wrist.ble import BleLink
from agent.wrist.lifecycle import Lifecycle
from agent.wrist.link import Link, LinkFactory
from agent.wrist.profiles import load_profile
from agent.wrist.source import WristSource
from tests.fakes import ble_link as fake
from tests.fakes.ble_link import FakeBleLink, FakeLinks

KW: dict[str, Any] = {
    "name": "left", "address": "00:AA:BB:CC:DD:01", "adapter": "hci0",
    "profile": load_profile("wearcap-open"), "rate_hz": 200.0,
    "on_packet": lambda _t, _d: None, "on_event": lambda _e: None, "connect_timeout": 20.0,
    "scan_timeout": 5.0, "policy": ble.BackoffPolicy(), "clock": lambda: 0,
}


def public(cls: type) -> dict[str, Any]:
    return {k: v for c in reversed(cls.__mro__[:-1]) for k, v in vars(c).items()
            if not k.startswith("_")}


def drift(fake_cls: type, real_cls: type) -> list[str]:
    """What of ``fake_cls``'s public API the real class lacks or spells differently."""
    problems: list[str] = []
    real = public(real_cls)
    for name, member in public(fake_cls).items():
        if name not in real:
            problems.append(f"{name}: not in {real_cls.__name__}")
            continue
        if isinstance(member, property) != isinstance(real[name], property):
            problems.append(f"{name}: property in one, not in the other")
        elif callable(member):
            problems += [f"{name}{p}" for p in params_drift(member, real[name])]
    init = next(vars(c)["__init__"] for c in fake_cls.__mro__ if "__init__" in vars(c))
    problems += [f"__init__{p}" for p in params_drift(init, vars(real_cls)["__init__"])]
    return problems


def params_drift(fake_fn: Any, real_fn: Any) -> list[str]:
    fp = inspect.signature(fake_fn).parameters
    rp = inspect.signature(real_fn).parameters
    out = []
    for name, p in fp.items():
        r = rp.get(name)
        if r is None:
            out.append(f"({name}): no such parameter in the real API")
        elif p.kind != r.kind:
            out.append(f"({name}): {p.kind.description} here, {r.kind.description} there")
        elif p.default != r.default:
            out.append(f"({name}): default {p.default!r} here, {r.default!r} there")
    for name, r in rp.items():
        if name not in fp and r.default is inspect.Parameter.empty and r.kind not in (
                r.VAR_POSITIONAL, r.VAR_KEYWORD):
            out.append(f"({name}): required by the real API, missing here")
    return out


def emitted_kinds(path: Path) -> set[str]:
    """The kinds in ``LinkEvent(t, "kind", ...)`` calls of a source file."""
    kinds = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "LinkEvent" \
                and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) \
                and isinstance(node.args[1].value, str):
            kinds.add(node.args[1].value)
    return kinds


def test_canary_fake_methods_properties_and_parameters_exist_in_the_real_link():
    assert drift(FakeBleLink, BleLink) == []


def test_canary_both_links_satisfy_the_protocol_the_source_reads():
    real, made = BleLink(**KW), FakeBleLink(**KW)  # BleLink's constructor touches no radio
    assert isinstance(real, Link) and isinstance(made, Link)
    assert type(made.lifecycle) is type(real.lifecycle) is Lifecycle
    factory_params = inspect.signature(LinkFactory.__call__).parameters
    for cls in (BleLink, FakeBleLink):
        params = inspect.signature(cls).parameters
        assert set(factory_params) - {"self"} <= set(params), cls
    src_default = inspect.signature(WristSource).parameters["link_factory"].default
    assert src_default is BleLink


def test_canary_the_fake_emits_only_event_kinds_the_real_link_emits():
    real = emitted_kinds(Path(ble.__file__))
    assert {"connected", "lost", "failed", "refused", "info", "time", "stopped"} <= real
    assert emitted_kinds(Path(fake.__file__)) <= real


def test_canary_catches_a_drifted_fake():
    class Drifted(FakeBleLink):
        def stop(self, timeout: float = 1.0) -> None:  # another default
            super().stop(timeout)

        def reconnect_now(self) -> None:  # not in the real API
            pass

    problems = drift(Drifted, BleLink)
    assert any(p.startswith("stop(timeout): default") for p in problems)
    assert any(p.startswith("reconnect_now") for p in problems)


def test_the_source_runs_on_the_fake_made_by_its_factory():
    links = FakeLinks()
    src = WristSource(WristBand(address="00:AA:BB:CC:DD:01"), BleSection(), link_factory=links)
    src.start()
    assert links.last.running and src.status()["state"] == "scanning"
    links.last._fake_streaming()
    src.drain()
    assert src.status()["state"] == "streaming"
    src.stop()
    assert not links.last.running and src.status()["state"] == "stopped"
