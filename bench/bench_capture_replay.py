"""The capture's own hot paths on recorded rig inputs, against a baseline tree in the same run.

    .venv/bin/python bench/bench_capture_replay.py [-s SECONDS] [--ref REF] [--rounds R]
                                                   [--repeat N] [--json]

Records ``SECONDS`` of the whole simulated rig as `wearcap run` does (bench/rig.py) and keeps
what reaches the agent's sans-IO parts:

- every call into each wrist band's stream (``BandStream``: notifications, link events, time
  exchanges, drains, flushes, segment opens), which decodes, feeds the band clock
  (agent/clock/band.py) and batches;
- every read the head MCU's serial thread hands ``McuSource`` (and its link events), and the
  writer's calls into it (drains, frames to match, flushes).

It then replays those inputs in one thread through this work tree's code and through the code
committed at ``REF`` (default ``main``; a clean copy by ``git archive``), each in a fresh
interpreter, the two taking ``--rounds`` turns, and prints each one's CPU (the best of its
``--repeat`` x ``--rounds`` replays), the ratio to the baseline, and whether both wrote the
same messages (topic, time and payload of every one: a speed-up must change nothing). Both
trees see exactly the same inputs, so how the simulated links happened to batch
notifications does not move the ratio, and a loaded machine moves it less than it moves
bench_capture_threads.py (the whole agent's CPU on the live rig).

A third figure replays the decoders alone: each band's profile decoder on its notifications
and the MCU's frame decoder (COBS, CRC, msgpack, fields) on its reads, outputs compared too.

Not in the figure: the BLE loop (bleak and D-Bus), the serial reader's reads, the camera,
MCAP writing and checkpoints (bench_capture_threads.py --stages has them).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import pickle
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.trees import export_tree, run_json  # noqa: E402

KINDS = ("wrist", "mcu", "decoders")


# ---------------------------------------------------------------- recording (this tree)

def record(seconds: float, out: Path) -> dict[str, int]:
    """Run the rig for ``seconds`` and pickle what the bands' streams and the MCU source got."""
    sys.path.insert(0, str(REPO))
    from agent.mcu import source as mcu_source
    from agent.wrist import stream as wrist_stream
    from bench.rig import recording

    bands: list[dict[str, Any]] = []
    mcu: list[tuple[str, tuple[Any, ...]]] = []
    lock = threading.Lock()

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return dataclasses.asdict(v)
        return v

    bs = wrist_stream.BandStream
    orig_init = bs.__init__

    def init(self: Any, band: Any, batch_seconds: float) -> None:
        orig_init(self, band, batch_seconds)
        self._replay_log = {"band": dataclasses.asdict(band), "batch_seconds": batch_seconds,
                            "calls": []}
        bands.append(self._replay_log)

    patched: list[tuple[Any, str, Any]] = [(bs, "__init__", orig_init)]
    bs.__init__ = init  # type: ignore[method-assign]
    for name in ("start", "feed", "missed", "event", "flush", "open_segment", "stop",
                 "end_at", "drain"):
        fn = getattr(bs, name)

        def band_call(self: Any, *a: Any, _fn: Any = fn, _name: str = name, **kw: Any) -> Any:
            self._replay_log["calls"].append((_name, tuple(plain(x) for x in a), kw))
            return _fn(self, *a, **kw)

        patched.append((bs, name, fn))
        setattr(bs, name, band_call)
    ms = mcu_source.McuSource
    for name, tag in (("_on_bytes", "bytes"), ("_on_event", "event"), ("_on_open", "open"),
                      ("drain", "drain"), ("on_frame", "frame"), ("flush", "flush"),
                      ("stop", "stop")):
        fn = getattr(ms, name)

        def mcu_call(self: Any, *a: Any, _fn: Any = fn, _tag: str = tag) -> Any:
            with lock:
                mcu.append((_tag, tuple(bytes(x) if isinstance(x, (bytes, bytearray))
                                        else x for x in a)))
            return _fn(self, *a)

        patched.append((ms, name, fn))
        setattr(ms, name, mcu_call)
    try:
        with recording(seconds + 3, mcu=True):
            time.sleep(seconds)
    finally:
        for owner, name, fn in reversed(patched):
            setattr(owner, name, fn)
    out.write_bytes(pickle.dumps({"bands": bands, "mcu": mcu, "seconds": seconds}))
    counts = {f"{b['band']['name']} calls": len(b["calls"]) for b in bands}
    counts["mcu inputs"] = len(mcu)
    return counts


# ---------------------------------------------------------------- replay (either tree)

def _digest(rows: list[Any]) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(repr(r).encode())
    return h.hexdigest()[:16]


def _replay_bands(rec: dict[str, Any]) -> list[Any]:
    from agent.config import WristBand
    from agent.wrist.ble import LinkEvent
    from agent.wrist.stream import BandStream

    band_fields = {f.name for f in dataclasses.fields(WristBand)}
    out: list[Any] = []
    for b in rec["bands"]:
        band = WristBand(**{k: v for k, v in b["band"].items() if k in band_fields})
        s = BandStream(band, b["batch_seconds"])
        for name, args, kw in b["calls"]:
            if name == "event":
                args = (LinkEvent(**args[0]),)
            r = getattr(s, name)(*args, **kw)
            if name == "drain":
                out.extend((m.topic, m.log_time_ns, repr(m.payload)) for m in r)
            elif name == "open_segment":
                out.append(r)
    return out


class _Link:
    """The serial link as McuSource sees it: a write returns the host time before it."""

    device = "replay"
    connected = True

    def __init__(self, now: list[int]) -> None:
        self.now = now

    def write(self, data: bytes) -> int:
        return self.now[0] - 300_000  # a ping leaves a little before the next read

    def stop(self) -> None:
        pass


def _replay_mcu(rec: dict[str, Any]) -> list[Any]:
    from agent.mcu.source import McuSource

    now = [0]
    src = McuSource("replay", clock=lambda: now[0])
    src._link = _Link(now)
    out: list[Any] = []
    for tag, a in rec["mcu"]:
        if tag == "bytes":
            now[0] = a[0]
            src._on_bytes(*a)
        elif tag == "event":
            now[0] = a[1]
            src._on_event(*a)
        elif tag == "open":
            src._on_open()
        elif tag == "drain":
            out.extend((m.topic, m.log_time_ns, repr(m.payload)) for m in src.drain())
        elif tag == "frame":
            src.on_frame(*a)
        elif tag == "flush":
            src.flush()
        elif tag == "stop":
            src._stopping = src._flush = True
    out.extend((m.topic, m.log_time_ns, repr(m.payload)) for m in src.drain())
    out.append(repr(src.stats))
    return out


def _replay_decoders(rec: dict[str, Any]) -> list[Any]:
    """The decoders alone (each band's profile decoder on its notifications, the MCU's frame
    decoder on its reads): what the two replays above spend before any clock or batch."""
    from agent.mcu.protocol import Decoder as McuDecoder
    from agent.wrist.decode import make_decoder

    out: list[Any] = []
    for b in rec["bands"]:
        dec = make_decoder(b["band"]["profile"], rate_hz=b["band"]["rate_hz"])
        for name, args, _kw in b["calls"]:
            if name == "feed":
                for c in dec.feed(args[1], args[0]):
                    out.append((c.arrival_ns, c.seq, c.device_t0_ns, c.index, c.lost_before,
                                c.acc.tobytes(), None if c.gyro is None else c.gyro.tobytes()))
    mcu = McuDecoder()
    for tag, a in rec["mcu"]:
        if tag == "bytes":
            out.extend(repr(m) for m in mcu.feed(a[1]))
    return out


def replay(path: Path, repeat: int) -> dict[str, Any]:
    """In this interpreter (its ``agent`` is the tree under test): CPU of each replay."""
    rec = pickle.loads(path.read_bytes())
    res: dict[str, Any] = {}
    for name, fn in (("wrist", _replay_bands), ("mcu", _replay_mcu),
                     ("decoders", _replay_decoders)):
        rows = fn(rec)  # warm: imports, first-call costs
        best = float("inf")
        for _ in range(repeat):
            t = time.thread_time()
            rows = fn(rec)
            best = min(best, time.thread_time() - t)
        res[name] = {"cpu_s": best, "pct_of_core": best / rec["seconds"] * 100,
                     "messages": len(rows), "digest": _digest(rows)}
    return res


def _run_tree(tree: Path, path: Path, repeat: int) -> dict[str, Any]:
    # the tree's agent, this file's replays (both trees are driven the same way)
    code = (f"import sys; sys.path.insert(0, {str(tree)!r}); "
            "import agent, json, importlib.util; "
            "assert agent.__file__.startswith(sys.path[0]), agent.__file__; "
            f"spec = importlib.util.spec_from_file_location('replay_bench', {__file__!r}); "
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
            "from pathlib import Path; "
            f"print(json.dumps(m.replay(Path({str(path)!r}), {repeat})))")
    return run_json(tree, code)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-s", "--seconds", type=float, default=30.0, help="rig recording length")
    ap.add_argument("--ref", default="main", help="the baseline: code committed at this ref")
    ap.add_argument("--repeat", type=int, default=5, help="replays per turn (best is kept)")
    ap.add_argument("--rounds", type=int, default=3, help="turns each tree takes, alternating")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="wearcap-replay-") as td:
        tmp = Path(td)
        path = tmp / "inputs.pickle"
        if not a.json:
            print(f"recording {a.seconds:g} s of the simulated rig ...", flush=True)
        counts = record(a.seconds, path)
        base_tree = export_tree(a.ref, tmp / "base")
        # the trees take turns (a loaded machine's slow spells fall on both), best kept
        runs: dict[str, list[dict[str, Any]]] = {"base": [], "this": []}
        for _ in range(a.rounds):
            runs["base"].append(_run_tree(base_tree, path, a.repeat))
            runs["this"].append(_run_tree(REPO, path, a.repeat))
        base, this = ({k: min((r[k] for r in rs), key=lambda x: x["cpu_s"])
                       for k in KINDS} for rs in (runs["base"], runs["this"]))
    res: dict[str, Any] = {"seconds": a.seconds, "ref": a.ref, "inputs": counts}
    for k in KINDS:
        res[k] = {"this_pct": round(this[k]["pct_of_core"], 3),
                  "base_pct": round(base[k]["pct_of_core"], 3),
                  "ratio": round(this[k]["cpu_s"] / base[k]["cpu_s"], 3),
                  "identical": this[k]["digest"] == base[k]["digest"]
                  and this[k]["messages"] == base[k]["messages"],
                  "messages": this[k]["messages"]}
    if a.json:
        print(json.dumps(res, indent=2))
        return 0
    print("inputs: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for k, label in (("wrist", "wrist bands (decode, band clock, batches)"),
                     ("mcu", "head MCU (decode, two-way clock, batches, strobes)"),
                     ("decoders", "decoders alone (band profiles, MCU frames)")):
        r = res[k]
        print(f"{label}: {r['this_pct']:.3f} % of a core replayed, {a.ref} "
              f"{r['base_pct']:.3f} % -> ratio {r['ratio']:.3f}; outputs "
              f"{'identical' if r['identical'] else 'DIFFER'} ({r['messages']} messages)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
