"""wearcap export PATH... --to foxglove|mp4|lerobot OUT: recordings in formats others read.

Inputs are segment files, directories of them, or a spool (as for ``inspect``). They are read
with every chunk CRC-checked: a file that is not MCAP, not a wearcap segment, or unreadable
stops the export with an error naming it (exit 2) before anything is written; a damaged chunk
is skipped, exported as a gap, and named in a warning. A progress bar shows on a terminal.
The writers need the export extra: ``pip install 'wearcap[export]'``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

HELP = "write recordings as Foxglove MCAP, MP4 + Parquet, or a LeRobot v3 dataset"
TARGETS = ("foxglove", "mp4", "lerobot")


def available() -> list[str]:
    """The targets whose writer is in this version."""
    import importlib.util

    return [t for t in TARGETS if importlib.util.find_spec(f"agent.export.{t}") is not None]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="segment files, directories of them, or a spool directory")
    p.add_argument("--to", required=True, nargs=2, metavar=("TARGET", "OUT"),
                   help="TARGET foxglove: one MCAP per take; mp4: MP4 + Parquet per take; "
                   "lerobot: a LeRobot v3 dataset. OUT: the output directory (foxglove: or "
                   "a .mcap file when the input is one take)")
    p.add_argument("--copy-video", action="store_true",
                   help="lerobot: copy the H.264 instead of re-encoding with a short GOP")
    p.add_argument("--task", default="recorded work",
                   help="lerobot: the task text of every episode")
    p.add_argument("--json", action="store_true", help="machine-readable summary on stdout")


def _need(module: str) -> None:
    import importlib

    from agent.errors import UsageError

    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise UsageError(f"export needs {module}, which is not installed: "
                         "pip install 'wearcap[export]'") from exc


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from agent.errors import InputError, UsageError
    from agent.export import takes as tk
    from agent.inspect import expand

    args.target, args.out = args.to
    if args.target not in available():
        raise UsageError(f"--to {args.target}: not a target; use one of "
                         f"{', '.join(available())}")
    needs = {"foxglove": ["google.protobuf", "mcap_protobuf", "foxglove_schemas_protobuf"],
             "mp4": ["pyarrow"], "lerobot": ["pyarrow"]}[args.target]
    for m in needs:
        _need(m)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    out = Path(args.out)
    if out.exists() and not out.is_dir() and not (args.target == "foxglove"
                                                 and out.suffix == ".mcap"):
        raise InputError("exists and is not a directory", path=str(out))
    paths = expand(args.paths)
    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeRemainingColumn(), console=err,
                  disable=not err.is_terminal, transient=True) as bar:
        reading = bar.add_task("reading", total=len(paths))
        segments = tk.load(paths, lambda _p: bar.advance(reading))
        for s in segments:
            if "segment_id" not in s.header:
                raise InputError("an MCAP file, but not a wearcap segment (no wearcap.segment "
                                 "metadata)", path=str(s.path))
            if s.damage:
                err.print(f"[yellow]warning: {s.path}: {len(s.damage)} damaged chunk(s) failed "
                          "their CRC; skipped and exported as gaps[/]")
            if not s.complete:
                err.print(f"[yellow]warning: {s.path}: unfinished (cut short); exported as "
                          "far as it goes[/]")
        found = tk.takes(segments)
        writing = bar.add_task(f"writing {args.target}", total=len(segments))
        summary = _export(args, found, out, lambda n: bar.advance(writing, n))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for t in summary:
            print(f"{t['take']}: {len(t['segments'])} segment(s) -> "
                  + ", ".join(t["files"]) + f"  (ends: {t['ends']})")
            for line in t.get("notes", []):
                print(f"  {line}")
    return 0


def _export(args: argparse.Namespace, found: list[Any], out: Path, tick: Any
            ) -> list[dict[str, Any]]:
    summary: list[dict[str, Any]] = []
    if args.target == "foxglove":
        from agent.export import foxglove

        files = foxglove.export(found, out, tick)
        for t, f in zip(found, files, strict=True):
            summary.append(_take_summary(t, [str(f)]))
    elif args.target == "mp4":
        from agent.export import mp4  # type: ignore[attr-defined,unused-ignore]

        for t in found:
            files = mp4.export_take(t, out)
            tick(len(t.segments))
            summary.append(_take_summary(t, [str(f) for f in files]))
    else:
        from agent.export import lerobot  # type: ignore[attr-defined,unused-ignore]

        res = lerobot.export(found, out, task=args.task, copy_video=args.copy_video)
        tick(sum(len(t.segments) for t in found))
        for t in found:
            s = _take_summary(t, [str(out)])
            s["episodes"] = [e for e in res["episodes"] if e["take"] == t.name]
            s["notes"] = [f"episode {e['episode_index']}: {e['length']} frames, " + (
                f"alignment residual max {e['align_residual_max_ms']:.3f} ms"
                if e["align_residual_max_ms"] is not None
                else "no motion sample within a sample period of its frames")
                for e in s["episodes"]]
            summary.append(s)
    return summary


def _take_summary(t: Any, files: list[str]) -> dict[str, Any]:
    return {"take": t.name, "device_id": t.device_id, "boot_id": t.boot_id,
            "segments": [s.id for s in t.segments], "ends": t.ends, "files": files,
            "placements": {s.id: p.to_dict() for s, p in zip(t.segments, t.placements,
                                                             strict=True)},
            "notes": [f"{s.id}: {p.how}" for s, p in zip(t.segments, t.placements,
                                                          strict=True)
                      if not p.how.startswith("own anchor (NTP")]}

