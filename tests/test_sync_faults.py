"""Short run of the sync fault harness (bench/harness_sync_faults.py): a growing backlog
uploaded through the fault proxy to a `wearcap collector` child while faults are injected and
the sync service is killed with SIGKILL; every segment must arrive byte-identical, once, and
nothing may be deleted locally before the collector verified it. `--long`: 200 faults."""

from __future__ import annotations

import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))

import harness_sync_faults as harness


def test_faults_and_kills_lose_nothing(long_run, tmp_path):
    faults, kills = (200, 20) if long_run else (20, 3)
    result = harness.run(faults=faults, kills=kills, seed=3, root=tmp_path / "h")
    print({k: v for k, v in result.items() if not isinstance(v, list)})
    assert result["faults"] >= faults and result["kills"] == kills
    assert result["drained"], result
    assert result["lost"] == [] and result["mismatched"] == []
    assert result["duplicated"] == []
    assert result["deleted_early"] == []
    assert result["left_local_unevicted"] == 0  # all verified, so all evicted
