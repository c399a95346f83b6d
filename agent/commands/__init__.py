"""One module per subcommand: HELP, add_arguments(parser), run(args) -> int."""

import argparse as _argparse
import math as _math


def finite_float(text: str) -> float:
    """An argparse type: a finite number (``nan`` and ``inf`` are usage errors)."""
    try:
        value = float(text)
    except ValueError:
        raise _argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not _math.isfinite(value):
        raise _argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number above zero."""
    value = finite_float(text)
    if value <= 0:
        raise _argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return value
