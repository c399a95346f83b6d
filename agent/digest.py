"""SHA-256 of a file, read in bounded blocks: the identity of a segment everywhere."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

BLOCK = 1024 * 1024


def sha256_file(path: Path, between_blocks: Callable[[], None] | None = None) -> str:
    """Hex SHA-256 of ``path``; ``between_blocks`` runs after each block (it may raise to
    abandon a long hash, e.g. when a service is stopping)."""
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        while block := fh.read(BLOCK):
            h.update(block)
            if between_blocks is not None:
                between_blocks()
    return h.hexdigest()
