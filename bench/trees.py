"""Baseline trees for the benches that price this tree against code committed at a ref.

    base = export_tree("main", tmp / "base")       # git archive of the ref, unpacked
    out = run_json(base, code)                     # ``python -c code`` there; its last line, JSON
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def export_tree(ref: str, dst: Path) -> Path:
    """A copy of the code committed at ``ref`` (the work tree is shared and may be mid-edit)."""
    dst.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dst)], input=archive, check=True)
    return dst


def run_json(tree: Path, code: str) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter in ``tree`` and read the JSON its last line prints;
    a failure ends the bench with the child's error."""
    r = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True, text=True,
                       check=False)
    if r.returncode != 0:
        raise SystemExit(f"replay in {tree} failed:\n{r.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return out
