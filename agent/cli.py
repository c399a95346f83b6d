"""The ``wearcap`` command line: a thin dispatcher.

Each subcommand lives in ``agent/commands/<name>.py`` with ``HELP``, ``add_arguments(p)`` and
``run(args) -> int``. Heavy imports happen inside ``run``. Errors from the WearcapError tree
become ``wearcap: error: ...`` and their exit code (2 for bad usage, config or input).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from agent import __version__
from agent.errors import WearcapError

COMMANDS = (
    "run", "sync", "collector", "demo", "inspect", "export", "config",
    "status", "selftest", "provision", "pair", "calibrate", "battery",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"wearcap: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="wearcap", description="Capture agent for a head-mounted rig.")
    parser.add_argument("--version", action="version", version=f"wearcap {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (repeat for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"agent.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"agent.commands.{name}":
                raise
            continue
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_module=mod)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "_module", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args._module.run(args) or 0)
    except WearcapError as exc:
        print(f"wearcap: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
