"""One registry of wrist-profile facts (agent/wrist/registry.py): every module that asks
about a profile gets the same answer from it."""

from __future__ import annotations

import dataclasses

import pytest

from agent import config
from agent.sim.band_model import DEFAULT_SPP
from agent.wrist import control, imu_batch, registry, timing
from agent.wrist.decode import PROFILES, make_decoder
from agent.wrist.profiles import known_profiles


def test_every_module_reads_the_same_profiles_from_the_registry():
    names = registry.NAMES
    assert names == PROFILES
    field = {f.name: f for f in dataclasses.fields(config.WristBand)}["profile"]
    assert field.metadata["choices"] == names
    assert set(names) <= set(known_profiles())  # each has its sensor-profile file
    assert set(timing.TIMING) == set(names)
    assert {n: registry.facts(n).sim_samples_per_packet for n in names} == DEFAULT_SPP
    assert tuple(n for n in names if registry.facts(n).replies) == control.REPLYING


@pytest.mark.parametrize("name", registry.NAMES)
def test_each_profiles_facts_agree_with_the_modules_that_use_them(name):
    f = registry.facts(name)
    dec = make_decoder(name, rate_hz=50)
    assert dec.profile == name and type(dec).__name__ == f.decoder.rpartition(":")[2]
    assert timing.TIMING[name].kind == f.fit_kind
    assert f.batch_encoding == imu_batch.ENCODING
    prof = f.sensor_profile()
    assert prof.name == name and prof.latency_ns > 0 and prof.latency_uncertainty_ns > 0
    assert f.answers(2) == (name in ("wearcap-open", "polar-pmd"))
    assert f.two_way(2) == f.stop_count == (name == "wearcap-open")
    assert not f.two_way(1) and not (name == "wearcap-open" and f.answers(1))


def test_an_unknown_profile_names_the_known_ones():
    with pytest.raises(ValueError, match="known: wearcap-open, polar-pmd"):
        registry.facts("fitbit")


def test_timing_facts_come_from_the_registry():
    from agent.clock.rate import BURST_GAP_NS

    for name in registry.NAMES:
        assert timing.TIMING[name] is registry.facts(name).timing
        args = registry.facts(name).timing.fit_args
        assert args.get("burst_gap_ns", BURST_GAP_NS) == BURST_GAP_NS


@pytest.mark.parametrize("name", registry.NAMES)
def test_each_profiles_simulated_encoder_comes_from_the_registry(name):
    """The simulated band packs with the encoder its profile's facts name, and what it packs
    decodes to the counts it took."""
    import numpy as np

    from agent.sim.band_model import BandModel, BandParams

    f = registry.facts(name)
    assert f.sim_encoder.startswith("agent.sim.band_encoders:")
    model = BandModel(BandParams(profile=name, rate_hz=50, seed=2), 0, record=True)
    dec = make_decoder(name, rate_hz=50)
    chunks = [c for d in model.deliveries_until(3_000_000_000) for c in dec.feed(d.packet,
                                                                               d.host_ns)]
    chunks.extend(dec.flush())
    assert chunks and model.recorded is not None
    for c in chunks:
        want = np.array([model.recorded[c.index + i][0] for i in range(c.n)])
        assert c.acc.tolist() == want.tolist()
    enc = f.make_sim_encoder(model.device_period_ns)
    acc = np.array([[1, -2, 3], [4, 5, -6]], np.int16)
    packets = enc(0, np.array([10**9, 10**9 + 20_000_000], np.int64), acc, -acc, None)
    assert packets and all(isinstance(p, bytes) for p, _, _ in packets)
    covered = sorted({(off, n) for _, off, n in packets})  # the packets say what they carry
    assert covered == ([(0, 1), (1, 1)] if name == "witmotion" else [(0, 2)])
    dec = make_decoder(name, rate_hz=50)
    back = [c for i, (p, _, _) in enumerate(packets) for c in dec.feed(p, i)] + dec.flush()
    assert np.concatenate([c.acc for c in back]).tolist() == acc.tolist()
    assert f.sim_packs_at_events == (name == "wearcap-open")
