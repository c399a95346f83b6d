"""Terminal output that stays readable when it is not a terminal.

rich lays tables out for 80 columns when stdout is a pipe or a file, and then cuts device ids
and headers ("sim-00…", "verifi…"). Off a terminal, a console here is wide enough for any row
(COLUMNS, when set, still wins), and it prints no colour codes.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

PIPE_WIDTH = 1000
"""Columns assumed off a terminal: tables are as wide as their content, never cut."""


def console(*, stderr: bool = False) -> Console:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty() or os.environ.get("COLUMNS"):
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=PIPE_WIDTH, soft_wrap=True)
