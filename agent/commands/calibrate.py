"""wearcap calibrate: measure a wrist band's latency with taps against the head mount.

    wearcap calibrate [--band left] [--taps 12] [--dry-run] [--json]
    wearcap calibrate --band left --from SEGMENT.mcap [SEGMENT.mcap ...]

The technician taps the band against the head mount when asked; each tap is one mechanical
event seen by the head IMU (on the two-way-synced MCU clock: no latency assumed) and by the
band (through its one-way mapping, which assumed a latency). How much later the band saw the
taps, on average, is how far its assumed latency is off (agent.mcu.tap). The band's samples
are first placed by its clock refitted over the whole recording (agent.mcu.tap_refit), not
by the young fit they were stored with, whose error at the time of the taps a converged fit
later no longer has; that refit's own bound at the taps is part of the uncertainty. The
result is written as the band's ``latency_ms`` / ``latency_uncertainty_ms`` /
``latency_source = "calibrated"`` on its ``[[wrist]]`` entry of the device config
(agent.commands.calibrate_config), so the next recording's bounds use it and its batches
say ``latency: "calibrated"``.

Live (the default) it opens the MCU and the band itself (the capture service must not be
running: it holds both), waits for both to stream, lets the band stream for ``--settle``
s, then asks for each tap and confirms it on the LED and haptic as the head IMU feels it,
then streams as long again (the refit is tightest under the middle of its window). On the
simulated rig the rig taps for the technician (agent.sim.rig.tap_rig). ``--from`` reads
recorded segments instead (their /head/imu and /wrist/<band>/imu).

Exit 0 with a result; 1 when the devices fail or too few taps were seen; 2 for bad input.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from agent.commands import positive_float

if TYPE_CHECKING:
    from agent.config import Config, WristBand
    from agent.mcu.tap import Stream, TapResult

HELP = "measure a wrist band's latency by tapping it against the head mount, and store it"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="F", help="device config, also the file written "
                   "(default: the device's own)")
    p.add_argument("--band", metavar="NAME|ADDRESS",
                   help="the [[wrist]] band to calibrate (default: the only one)")
    p.add_argument("--taps", type=int, default=12, metavar="N",
                   help="taps to ask for (default 12)")
    p.add_argument("--min-taps", type=int, default=6, metavar="N",
                   help="fewest consistent taps that give a result (default 6)")
    p.add_argument("--from", dest="segments", nargs="+", metavar="SEGMENT",
                   help="analyse recorded segments instead of recording")
    p.add_argument("--tap-timeout", type=positive_float, default=15.0, metavar="S",
                   help="how long to wait for each tap (default 15)")
    p.add_argument("--timeout", type=positive_float, default=60.0, metavar="S",
                   help="how long to wait for the MCU and the band to stream (default 60)")
    p.add_argument("--settle", type=positive_float, default=60.0, metavar="S",
                   help="seconds the band streams before the first tap, and again after the "
                   "last: its clock is refitted over the whole recording, and the longer it "
                   "is, the tighter the result (default 60)")
    p.add_argument("--dry-run", action="store_true", help="measure, but write nothing")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def pick_band(cfg: Config, which: str | None) -> WristBand:
    from agent.errors import UsageError

    names = ", ".join(f"{w.name} ({w.address or 'no address'})" for w in cfg.wrist)
    if not cfg.wrist:
        raise UsageError("this config has no [[wrist]] band to calibrate (run wearcap pair)")
    if which is None:
        if len(cfg.wrist) > 1:
            raise UsageError(f"this rig has {len(cfg.wrist)} bands; say which with --band "
                             f"(configured: {names})")
        return cfg.wrist[0]
    for w in cfg.wrist:
        if which == w.name or (w.address and which.upper() == w.address.upper()):
            return w
    raise UsageError(f"no band {which!r} in the config (configured: {names})")


def analyse(head: Stream, band: Stream, band_name: str, *, min_taps: int,
            assumed_ns: int | None = None, refitted: bool = False) -> tuple[TapResult, int]:
    """The fit, and the latency (ns) the band's times were recorded with. ``refitted``:
    ``band``'s times come from its clock refitted over the whole recording
    (agent.mcu.tap_refit.hindsight), whose bound at the taps goes into the uncertainty."""
    from agent.errors import SourceError
    from agent.mcu import tap

    if not len(head.host_ns):
        raise SourceError("no head IMU samples: is the MCU's IMU streaming?", device="mcu")
    if not len(band.host_ns):
        raise SourceError("no samples from the band", device=band_name)
    assumed = assumed_ns if assumed_ns is not None else band.latency_ns
    if assumed is None:
        raise SourceError("the band's batches do not say which latency they assumed",
                          device=band_name)
    h_sp = tap.onset_spans(head.host_ns, head.acc, head.acc_scale)
    b_sp = tap.onset_spans(band.host_ns, band.acc, band.acc_scale)
    h_on, b_on = [hi for _lo, hi in h_sp], [hi for _lo, hi in b_sp]
    # each tap's band sample: the mapping's bound there (the refit's; latency aside) and how
    # far that sample's stamp strays from its neighbours' line
    b_b = [(b if refitted else 0) + j for b, j in
           zip(tap.bounds_at(band, b_on), tap.stamp_jitter_at(band, b_on), strict=True)]
    r = tap.calibrate(h_sp, b_sp, head_bound_ns=tap.bound_at(head, h_on),
                      head_bounds_ns=tap.bounds_at(head, h_on),
                      band_period_ns=tap.period_ns(band),
                      head_period_ns=tap.period_ns(head) or 1_000_000,
                      band_bounds_ns=b_b)
    if r is None or r.taps < min_taps:
        got = 0 if r is None else r.taps
        raise SourceError(
            f"too few taps: {got} seen by both the head IMU and the band, {min_taps} needed "
            f"(head IMU felt {len(h_on)}, the band {len(b_on)}"
            + (f", {len(r.rejected_ns)} inconsistent" if r is not None and r.rejected_ns
               else "") + "); tap the band firmly against the head mount", device=band_name)
    return r, assumed


def refit(band: WristBand, payloads: list[dict[str, Any]]) -> Stream:
    """The band's samples placed by its clock refitted over the whole recording."""
    from agent.errors import SourceError
    from agent.mcu.tap_refit import hindsight

    try:
        return hindsight(payloads, band.profile, band.rate_hz)
    except ValueError as exc:
        raise SourceError(f"cannot refit the band's clock over the recording: {exc}",
                          device=band.name) from None


def result_doc(band: WristBand, r: TapResult, assumed_ns: int, written: str | None,
               source: str) -> dict[str, Any]:
    latency_ms = round(r.latency_ms(assumed_ns / 1e6), 3)
    return {"band": band.name, "address": band.address, "profile": band.profile,
            "source": source, "taps": r.taps, "rejected": len(r.rejected_ns),
            "head_only": r.head_only, "band_only": r.band_only,
            "assumed_latency_ms": round(assumed_ns / 1e6, 3),
            "offset_ms": round(r.offset_ns / 1e6, 3),
            "latency_ms": latency_ms,
            "latency_uncertainty_ms": round(r.uncertainty_ns / 1e6, 3),
            "offsets_ms": [round(o / 1e6, 3) for o in r.offsets_ns],
            "rejected_offsets_ms": [round(o / 1e6, 3) for o in r.rejected_ns],
            "span_ms": [round(t / 1e6, 3) for t in r.span_ns],
            "sampling_ms": round(r.sampling_ns / 1e6, 3),
            "head_bound_ms": round(r.head_bound_ns / 1e6, 3),
            "band_fit_bound_ms": round(r.band_bound_ns / 1e6, 3),
            "band_mapping": "refitted over the recording",
            "written": written}


def read_segments(paths: list[str], band: str) -> tuple[list[dict[str, Any]],
                                                        list[dict[str, Any]]]:
    """The /head/imu and /wrist/<band>/imu payloads of recorded segments, in order."""
    import msgpack
    from mcap.exceptions import McapError
    from mcap.reader import make_reader

    from agent.errors import InputError
    from agent.mcu.records import IMU_TOPIC

    head: list[dict[str, Any]] = []
    wrist: list[dict[str, Any]] = []
    topic = f"/wrist/{band}/imu"
    for path in paths:
        try:
            with open(path, "rb") as fh:
                for _s, ch, m in make_reader(fh).iter_messages(topics=[IMU_TOPIC, topic]):
                    (head if ch.topic == IMU_TOPIC else wrist).append(msgpack.unpackb(m.data))
        except OSError as exc:
            raise InputError(f"cannot read: {exc.strerror or exc}", path=path) from None
        except (McapError, ValueError, KeyError, EOFError) as exc:
            raise InputError(f"not a readable recording segment: {exc}", path=path) from None
    return head, wrist


def run(args: argparse.Namespace) -> int:
    from agent import config
    from agent.commands.calibrate_config import config_target, write_latency
    from agent.errors import SourceError, UsageError
    from agent.mcu import tap

    if args.taps < 1 or args.min_taps < 1:
        raise UsageError("--taps and --min-taps must be at least 1")
    if args.min_taps > args.taps and not args.segments:
        raise UsageError(f"--min-taps {args.min_taps} is more than --taps {args.taps}")
    cfg = config.load_default(args.config)
    band = pick_band(cfg, args.band)
    target = None if args.dry_run else config_target(cfg)
    if args.segments:
        head_p, band_p = read_segments(args.segments, band.name)
        source = "segments"
    else:
        if not cfg.mcu.enabled:
            raise SourceError("calibration needs the head MCU (its IMU feels the taps); "
                              "this config has [mcu] enabled = false", device="mcu")
        from agent.commands.calibrate_live import Prompter, record

        head_p, band_p = record(cfg, band, Prompter(quiet=args.json), taps=args.taps,
                                min_taps=args.min_taps, tap_timeout=args.tap_timeout,
                                timeout=args.timeout, settle=args.settle)  # and as long after
        source = "live"
    if not band_p:
        raise SourceError(f"no samples of band {band.name!r}"
                          + (" in these segments" if args.segments else ""), device=band.name)
    r, assumed = analyse(tap.stream(head_p), refit(band, band_p), band.name,
                         min_taps=args.min_taps, refitted=True)
    latency_ms = r.latency_ms(assumed / 1e6)
    if latency_ms < 0:
        raise SourceError(f"the taps put the band {-latency_ms:.2f} ms ahead of the head IMU, "
                          "which no latency explains: is the MCU's clock mapping converged, "
                          "and is this the band that was tapped?", device=band.name)
    written = None
    if target is not None:
        write_latency(target, band.name, round(latency_ms, 3),
                      round(r.uncertainty_ns / 1e6, 3))
        written = str(target)
    doc = result_doc(band, r, assumed, written, source)
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"band {band.name} ({band.profile}): latency {doc['latency_ms']:.2f} ms "
          f"+- {doc['latency_uncertainty_ms']:.2f} ms from {r.taps} taps "
          f"(recorded assuming {doc['assumed_latency_ms']:.2f} ms; the taps came "
          f"{doc['offset_ms']:+.2f} ms late)")
    print(f"  the band's samples placed by its clock refitted over the recording; of the "
          f"uncertainty, +-{doc['sampling_ms']:.2f} ms is what the taps' samples leave open, "
          f"+-{doc['band_fit_bound_ms']:.2f} ms that fit's bound at the taps, "
          f"+-{doc['head_bound_ms']:.2f} ms the head's")
    if r.rejected_ns or r.head_only or r.band_only:
        print(f"  not used: {len(r.rejected_ns)} inconsistent, {r.head_only} felt by the "
              f"head only, {r.band_only} by the band only")
    from agent.wrist.timing import TIMING, profile_latency

    if TIMING[band.profile].kind == "two-way":
        print(f"  note: {band.profile} bands measure their latency themselves (the two-way "
              "time exchange); the setting is only their fallback without it")
    default = profile_latency(band.profile)
    if r.uncertainty_ns >= default.uncertainty_ns:
        print(f"  note: +-{doc['latency_uncertainty_ms']:.2f} ms is no tighter than the profile's "
              f"default +-{default.uncertainty_ns / 1e6:.2f} ms (but centred on this host's "
              "latency); more taps, or the band at a higher rate, tighten it")
    if written:
        print(f"  written to {written} ([[wrist]] {band.name}: latency_ms, "
              "latency_uncertainty_ms); the next recording uses it")
    else:
        print("  --dry-run: nothing written")
    return 0
