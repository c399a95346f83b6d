"""Heap settings for long recordings: large blocks stay out of the heap once pinned."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from agent import heap
from tests.conftest import NOT_APPLICABLE, REPO

CHILD = """
import sys
from agent import heap

def heap_kib():
    for line in open("/proc/self/maps"):
        if line.rstrip().endswith("[heap]"):
            a, b = line.split()[0].split("-")
            return (int(b, 16) - int(a, 16)) // 1024
    return 0

big = bytearray(8 << 20)
del big  # glibc has now raised its threshold: blocks under 8 MiB come from the heap
if sys.argv[1] == "pin":
    assert heap.pin_mmap_threshold()
before = heap_kib()
keep = [bytearray(1 << 20) for _ in range(4)]
print(heap_kib() - before)
"""


only_glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc",
                                reason=NOT_APPLICABLE + "glibc heap behaviour")


@only_glibc
def test_pinned_threshold_keeps_megabyte_blocks_out_of_the_heap():
    def grown(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True,
                             text=True, check=True, cwd=REPO)
        return int(out.stdout)

    assert grown("default") >= 4 * 1024  # the sliding threshold: four 1 MiB blocks in heap
    assert grown("pin") < 1024


TRIM_CHILD = """
from agent import heap
keep = [bytes(2000) + bytes([i % 256]) for i in range(20000)]
del keep  # 40 MB of small blocks freed inside the heap
print(heap.trim())
"""


@only_glibc
def test_trim_hands_freed_heap_pages_back():
    out = subprocess.run([sys.executable, "-c", TRIM_CHILD], capture_output=True, text=True,
                         check=True, cwd=REPO)
    assert out.stdout.strip() == "True"


def test_trim_is_a_no_op_without_glibc(monkeypatch):
    monkeypatch.setattr(heap, "_libc", lambda: None)
    assert heap.trim() is False and heap.pin_mmap_threshold() is False
