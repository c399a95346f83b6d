"""wearcap config check F...: validate config files."""

from __future__ import annotations

import argparse
import json

HELP = "check config files (exit 2 naming the file, key and what is allowed)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = sub.add_parser("check", help="validate one or more config files")
    check.add_argument("files", nargs="+", metavar="F")
    check.add_argument("--json", action="store_true", help="machine-readable result")


def run(args: argparse.Namespace) -> int:
    from agent import config
    from agent.errors import ConfigError

    results = []
    worst = 0
    for f in args.files:
        try:
            cfg = config.load(f)
            results.append({"file": f, "ok": True, "layers": list(cfg.sources),
                            "digest": cfg.digest()})
            if not args.json:
                print(f"{f}: ok ({' <- '.join(cfg.sources)})")
        except ConfigError as exc:
            worst = 2
            results.append({"file": f, "ok": False, "error": str(exc), "key": exc.key,
                            "path": exc.path})
            if not args.json:
                print(f"wearcap: error: {exc}")
    if args.json:
        print(json.dumps(results, indent=2))
    return worst
