"""The end of `wearcap demo`: what was recorded, uploaded and verified; per-stream rates and
gaps; each band's timestamp error against the simulator's ground truth; where the files are.

The ground truth comes from the simulated bands themselves (``agent.sim.rig.TRUTH_ENV``):
sample ``k`` of a band was taken at ``start + phase + k * period`` on the host clock, and the
recording numbers samples from the first one the band delivered (``first_sample``). The error
of a recorded sample is its stored host time minus that.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgpack
import numpy as np


def streams(inspected: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per topic over all segments: count, rate, gaps reported and records lost."""
    out: dict[str, dict[str, Any]] = {}
    for seg in inspected:
        for topic, st in (seg.get("streams") or {}).items():
            o = out.setdefault(topic, {"unit": st.get("unit"), "count": 0, "seconds": 0.0,
                                       "gaps": 0, "lost": 0})
            o["count"] += int(st.get("count") or 0)
            if st.get("first_ns") is not None and st.get("last_ns") is not None:
                o["seconds"] += (st["last_ns"] - st["first_ns"]) / 1e9
            o["gaps"] += int(st.get("reported_gaps") or 0)
            o["lost"] += max(0, int(st.get("reported_lost") or 0))
    for o in out.values():
        o["rate_hz"] = round(o["count"] / o["seconds"], 2) if o["seconds"] > 0 else None
    return out


def timestamp_error(sealed: list[Path], truth: dict[str, Any]) -> dict[str, Any]:
    """|stored host time - true time| per band, in microseconds (p50, p99, max)."""
    from mcap.reader import make_reader

    from agent.wrist.imu_batch import batch_clock, decode_payload

    errs: dict[str, list[Any]] = {name: [] for name, t in truth.items() if t}
    bounds: dict[str, list[Any]] = {name: [] for name in errs}
    conv: dict[str, list[Any]] = {name: [] for name in errs}
    for path in sealed:
        with path.open("rb") as fh:
            for _, ch, m in make_reader(fh).iter_messages(
                    topics=[f"/wrist/{n}/imu" for n in errs]):
                name = ch.topic.split("/")[2]
                t = truth[name]
                payload = msgpack.unpackb(m.data)
                d = decode_payload(payload)
                clock = batch_clock(payload)
                # the recording numbers a band's samples from the first one it received
                k = d["index"] + int(t.get("first_sample") or 0)
                true_ns = t["start_ns"] + t["phase_ns"] + k * t["period_ns"]
                errs[name].append(np.abs(d["host_ns"] - true_ns))
                n = len(d["host_ns"])
                bound = clock.get("error_bound_ns")
                bounds[name].append(np.full(n, float(bound) if isinstance(
                    bound, (int, float)) and bound >= 0 else np.nan))
                conv[name].append(np.full(n, bool(clock.get("converged"))))
    out: dict[str, Any] = {}
    for name, parts in errs.items():
        if not parts:
            out[name] = None
            continue
        e = np.concatenate(parts) / 1e3
        b = np.concatenate(bounds[name]) / 1e3
        c = np.concatenate(conv[name])
        out[name] = {"samples": len(e), "p50_us": round(float(np.percentile(e, 50)), 1),
                     "p99_us": round(float(np.percentile(e, 99)), 1),
                     "max_us": round(float(e.max()), 1),
                     # the claim each sample makes: its error is within its stored bound
                     "within_bound_pct": round(100.0 * float(np.mean(e <= b)), 2),
                     # the mapper's first seconds are not converged (DESIGN's 1 ms p99 is
                     # for a converged mapping): the error once it says it is
                     "converged_samples": int(c.sum()),
                     "converged_p99_us": round(float(np.percentile(e[c], 99)), 1)
                     if c.any() else None}
    return out


def load_truth(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def render(rep: dict[str, Any], con: Any) -> None:
    from rich.table import Table

    c = rep["device"]
    con.print(f"segments: {rep['recorded']} recorded, {rep['uploaded']} uploaded, "
              f"{c.get('verified', 0)} verified by the collector, "
              f"{c.get('missing_count', '?')} missing")
    t = Table(title="streams", show_edge=False)
    for col in ("stream", "count", "rate", "gaps", "lost"):
        t.add_column(col, justify="left" if col == "stream" else "right", no_wrap=True)
    for topic, s in rep["streams"].items():
        t.add_row(topic, f"{s['count']} {s['unit'] or ''}".strip(),
                  "-" if s["rate_hz"] is None else f"{s['rate_hz']:g} Hz", str(s["gaps"]),
                  str(s["lost"]))
    con.print(t)
    if rep["timestamp_error"]:
        e = Table(title="timestamp error against the simulator's ground truth",
                  show_edge=False)
        for col in ("band", "samples", "p50", "p99", "max", "within bound",
                    "p99 once converged"):
            e.add_column(col, justify="left" if col == "band" else "right", no_wrap=True)
        for band, v in rep["timestamp_error"].items():
            if v is None:
                e.add_row(band, "0", "-", "-", "-", "-", "-")
            else:
                cp = v.get("converged_p99_us")
                e.add_row(band, str(v["samples"]), f"{v['p50_us']:g} us",
                          f"{v['p99_us']:g} us", f"{v['max_us']:g} us",
                          f"{v.get('within_bound_pct', 0):g} %",
                          "not converged" if cp is None else
                          f"{cp:g} us ({v['converged_samples']} samples)")
        con.print(e)
    f = rep["files"]
    con.print(f"files: segments {f['sealed']} (local) and {f['collector']} (collector); "
              f"logs {f['logs']}; look inside with: wearcap inspect {f['sealed']}")
