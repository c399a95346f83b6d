"""The band clock alone on recorded bench cells, against a baseline tree in the same run.

    .venv/bin/python bench/bench_band_clock.py [--profiles P ...] [--links L ...]
        [--latency MS] [--minutes M] [--seed S] [--ref REF] [--rounds R] [--repeat N] [--json]

Runs each cell of bench/bench_clock.py (profile x link, one latency and seed) once in this
tree and records every call the cell makes into its band's clock: ``observe`` (each decoded
chunk), ``place`` (each chunk of each batch, agent/wrist/timing.py), and whatever the cell and
the open profile's request aimer ask of the clock itself (``cut``, ``observe_exchange``,
``peek``, ``stated_floor_ns``, ``ready``, ...), in order. It then replays those calls through
this work tree's code and through the code committed at ``REF`` (default ``main``; a clean
copy by ``git archive``), each tree in a fresh interpreter, the two taking ``--rounds`` turns,
and prints each one's CPU per cell (the best of ``--repeat`` x ``--rounds`` replays), the
ratio to the baseline, and whether every output is the same: every placement (host t0,
spacing and each part of the bound), every peek and every answer, and the clock's state and
snapshot at the end. A speed-up must change nothing.

What is timed: the calls into agent/wrist/timing.py and the clock, nothing of the simulator or
the decoders (both trees replay the same recorded chunks).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import pickle
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.trees import export_tree, run_json  # noqa: E402

LINKS = ("default", "lossy")
PROFILES = ("wearcap-open", "polar-pmd", "movesense", "witmotion")


# ---------------------------------------------------------------- recording (this tree)

class _Recorder:
    """Stands in for a cell's clock: forwards every attribute and logs what was asked."""

    def __init__(self, clock: Any, log: list[Any]) -> None:
        object.__setattr__(self, "_clock", clock)
        object.__setattr__(self, "_log", log)

    def __getattr__(self, name: str) -> Any:
        v = getattr(self._clock, name)
        if callable(v):
            def call(*a: Any, **kw: Any) -> Any:
                self._log.append(("call", name, a, kw))
                return v(*a, **kw)
            return call
        self._log.append(("get", name))
        return v


def record(cells: list[Any]) -> list[dict[str, Any]]:
    """Each cell's clock arguments and the calls made into it, in order."""
    sys.path.insert(0, str(REPO))
    from bench import bench_clock

    bc: Any = bench_clock
    out: list[dict[str, Any]] = []
    orig = (bc.make_clock, bc.observe, bc.place)
    for c in cells:
        log: list[Any] = []
        made: dict[str, Any] = {}

        def make(profile: str, rate: float, lat: Any, _log: list[Any] = log,
                 _made: dict[str, Any] = made) -> Any:
            _made.update(profile=profile, rate=rate, latency=dataclasses.asdict(lat))
            return _Recorder(orig[0](profile, rate, lat), _log)

        def obs(clock: Any, ch: Any, _log: list[Any] = log) -> None:
            _log.append(("observe", dataclasses.asdict(ch)))
            orig[1](clock._clock, ch)

        def plc(clock: Any, ch: Any, _log: list[Any] = log) -> Any:
            _log.append(("place", dataclasses.asdict(ch)))
            return orig[2](clock._clock, ch)

        bc.make_clock, bc.observe, bc.place = make, obs, plc
        try:
            bc.run_cell(c)
        finally:
            bc.make_clock, bc.observe, bc.place = orig
        out.append({"cell": f"{c.profile}/{c.link}/{c.latency_ms:g}/s{c.seed}", **made,
                    "calls": log})
    return out


# ---------------------------------------------------------------- replay (either tree)

def _prepare(rec: dict[str, Any]) -> list[Any]:
    from agent.wrist.decode import ImuChunk

    fields = {f.name for f in dataclasses.fields(ImuChunk)}
    ops: list[Any] = []
    for op in rec["calls"]:
        if op[0] in ("observe", "place"):
            ops.append((op[0], ImuChunk(**{k: v for k, v in op[1].items() if k in fields})))
        else:
            ops.append(op)
    return ops


def _run(rec: dict[str, Any], ops: list[Any]) -> tuple[float, list[Any]]:
    from agent.clock.band import Latency
    from agent.wrist import timing

    clock = timing.make_clock(rec["profile"], rec["rate"], Latency(**rec["latency"]))
    observe, place = timing.observe, timing.place
    out: list[Any] = []
    add = out.append
    t = time.thread_time()
    for op in ops:
        kind = op[0]
        if kind == "observe":
            observe(clock, op[1])
        elif kind == "place":
            add(place(clock, op[1]))
        elif kind == "get":
            add(getattr(clock, op[1]))
        else:
            add(getattr(clock, op[1])(*op[2], **op[3]))
    cpu = time.thread_time() - t
    out.append(clock.state())
    out.append(clock.snapshot())
    return cpu, out


def _digest(rows: list[Any]) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(repr(r).encode())
    return h.hexdigest()[:16]


def replay(path: Path, repeat: int) -> dict[str, Any]:
    """In this interpreter (its ``agent`` is the tree under test): each cell's best CPU."""
    recs = pickle.loads(path.read_bytes())
    res: dict[str, Any] = {}
    for rec in recs:
        ops = _prepare(rec)
        best, rows = float("inf"), list[Any]()
        for _ in range(repeat):
            cpu, rows = _run(rec, ops)
            best = min(best, cpu)
        res[rec["cell"]] = {"cpu_s": best, "outputs": len(rows), "digest": _digest(rows),
                            "calls": len(ops)}
    return res


def _run_tree(tree: Path, path: Path, repeat: int) -> dict[str, Any]:
    code = (f"import sys; sys.path.insert(0, {str(tree)!r}); "
            f"sys.path.insert(1, {str(REPO)!r}); "
            "import agent, json; assert agent.__file__.startswith(sys.path[0]), agent.__file__; "
            "from bench.bench_band_clock import replay; from pathlib import Path; "
            f"print(json.dumps(replay(Path({str(path)!r}), {repeat})))")
    return run_json(tree, code)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profiles", nargs="+", default=list(PROFILES), choices=PROFILES)
    ap.add_argument("--links", nargs="+", default=list(LINKS))
    ap.add_argument("--latency", type=float, default=1.0, help="the cells' latency offset, ms")
    ap.add_argument("--minutes", type=float, default=3.0, help="simulated minutes per cell")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--ref", default="main", help="the baseline: code committed at this ref")
    ap.add_argument("--repeat", type=int, default=2, help="replays per turn (best is kept)")
    ap.add_argument("--rounds", type=int, default=2, help="turns each tree takes, alternating")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from bench.bench_clock import Cell

    cells = [Cell(p, lk, a.latency, a.seed, a.minutes) for p in a.profiles for lk in a.links]
    with tempfile.TemporaryDirectory(prefix="wearcap-bandclock-") as td:
        tmp = Path(td)
        path = tmp / "calls.pickle"
        if not a.json:
            print(f"recording {len(cells)} cells of {a.minutes:g} min ...", flush=True)
        path.write_bytes(pickle.dumps(record(cells)))
        base_tree = export_tree(a.ref, tmp / "base")
        runs: dict[str, list[dict[str, Any]]] = {"base": [], "this": []}
        for _ in range(a.rounds):
            runs["base"].append(_run_tree(base_tree, path, a.repeat))
            runs["this"].append(_run_tree(REPO, path, a.repeat))
    res: dict[str, Any] = {"ref": a.ref, "minutes": a.minutes, "cells": {}}
    tot = {"this": 0.0, "base": 0.0}
    same_all = True
    for name in runs["this"][0]:
        this = min((r[name] for r in runs["this"]), key=lambda x: x["cpu_s"])
        base = min((r[name] for r in runs["base"]), key=lambda x: x["cpu_s"])
        same = this["digest"] == base["digest"] and this["outputs"] == base["outputs"]
        same_all &= same
        tot["this"] += this["cpu_s"]
        tot["base"] += base["cpu_s"]
        res["cells"][name] = {"this_ms": round(this["cpu_s"] * 1e3, 1),
                              "base_ms": round(base["cpu_s"] * 1e3, 1),
                              "ratio": round(this["cpu_s"] / base["cpu_s"], 3),
                              "identical": same, "calls": this["calls"],
                              "digest": this["digest"]}
    res["ratio"] = round(tot["this"] / tot["base"], 3)
    res["identical"] = same_all
    if a.json:
        print(json.dumps(res, indent=2))
        return 0 if same_all else 1
    print(f"{'cell':<30} {'calls':>7} {a.ref + ' ms':>10} {'this ms':>9} {'ratio':>6}  outputs")
    for name, r in res["cells"].items():
        print(f"{name:<30} {r['calls']:>7} {r['base_ms']:>10.1f} {r['this_ms']:>9.1f} "
              f"{r['ratio']:>6.3f}  {'identical' if r['identical'] else 'DIFFER'}")
    print(f"all cells: {tot['base'] * 1e3:.1f} ms ({a.ref}) -> {tot['this'] * 1e3:.1f} ms, "
          f"ratio {res['ratio']:.3f}; outputs "
          f"{'identical in every cell' if same_all else 'DIFFER'}")
    return 0 if same_all else 1


if __name__ == "__main__":
    raise SystemExit(main())
