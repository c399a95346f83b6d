"""What a new user hit on the simulated rig, each turned into a clear message or a fix:
sync --once waiting out an old backoff, exit 0 beside skipped segments, tracebacks on a bad
spool, --dir, --duration or a missing extra."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, run_cli
from sync_servers import DEVICE, make_segments, tus_sink, write_config

from agent.sync.state import State


def _clean(res: subprocess.CompletedProcess[str]) -> str:
    out = res.stdout + res.stderr
    assert "Traceback" not in out, out
    return out


def test_sync_once_does_not_wait_out_an_earlier_runs_backoff(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    (seg,) = make_segments(spool, DEVICE, 1, 20_000)
    st = State(spool / "sync.sqlite3")
    st.add(seg.stem, 0, str(seg), seg.stat().st_size)
    st.update(seg.stem, attempts=7, last_error="HTTP 503", next_attempt=time.time() + 1e6)
    st.close()
    (tmp_path / "token").write_text("t\n")
    with tus_sink(tmp_path) as sink:
        cfg = write_config(tmp_path / "agent.toml", url=sink.url, spool=spool,
                           token_file=tmp_path / "token")
        # Before the fix this run sat silent for the saved backoff (here 11 days).
        res = run_cli("sync", "--config", str(cfg), "--once", "--json", timeout=90)
    _clean(res)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["verified"] == [seg.stem]
    assert "retrying 1 segment(s) at once" in res.stderr


def test_sync_once_exit_0_means_everything_was_verified(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    make_segments(spool, DEVICE, 1, 5_000)
    make_segments(spool, "other-rig", 1, 5_000, start=3)
    (tmp_path / "token").write_text("t\n")
    with tus_sink(tmp_path) as sink:
        cfg = write_config(tmp_path / "agent.toml", url=sink.url, spool=spool,
                           token_file=tmp_path / "token")
        res = run_cli("sync", "--config", str(cfg), "--once", "--json")
    _clean(res)
    assert res.returncode == 1
    summary = json.loads(res.stdout)
    assert summary["verified"] == [f"{DEVICE}-00000000"]
    (left,) = summary["left"]
    assert left["id"] == "other-rig-00000003" and left["state"] == "foreign"
    assert "other-rig" in left["why"] and "move it out of the spool" in left["why"]


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory an unprivileged user can reach (pytest's tmp_path is root's alone)."""
    d = Path(tempfile.mkdtemp(prefix="wearcap-test-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        for p in [d, *d.rglob("*")]:
            if p.is_dir():
                p.chmod(0o755)
        shutil.rmtree(d)


def _as_user(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI as an unprivileged user (root ignores file modes)."""
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] \
        if os.geteuid() == 0 else []
    return subprocess.run([*prefix, sys.executable, "-m", "agent", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "HOME": "/nonexistent"})


def test_sync_on_a_read_only_spool_or_a_file_says_so(shared_dir: Path) -> None:
    spool = shared_dir / "spool"
    make_segments(spool, DEVICE, 1, 1_000)
    for p in [spool, *spool.rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    token = shared_dir / "token"
    token.write_text("t\n")
    token.chmod(0o644)
    cfg = write_config(shared_dir / "agent.toml", url="http://127.0.0.1:9/files/",
                       spool=spool, token_file=token)
    cfg.chmod(0o644)
    res = _as_user("sync", "--config", str(cfg), "--once")
    out = _clean(res)
    assert res.returncode == 1
    assert "read-only" in out and str(spool) in out and "sudo -u wearcap" in out

    res = _as_user("sync", "--config", str(cfg), "--once", "--spool", str(token))
    out = _clean(res)
    assert res.returncode == 1
    assert "is a file, not a spool directory" in out and "--spool" in out


def test_demo_dir_that_is_a_file_or_read_only_is_a_usage_error(shared_dir: Path) -> None:
    f = shared_dir / "file"
    f.write_text("x")
    res = run_cli("demo", "--duration", "1", "--dir", str(f))
    assert res.returncode == 2 and "is a file, not a directory" in _clean(res)
    ro = shared_dir / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    res = _as_user("demo", "--duration", "1", "--dir", str(ro))
    assert res.returncode == 2, res.stderr
    assert "cannot write there" in _clean(res) and str(ro) in res.stderr


def test_run_duration_inf_is_refused_before_the_rig_starts() -> None:
    for bad in ("inf", "nan", "-3"):
        res = run_cli("run", "--duration", bad, timeout=60)
        out = _clean(res)
        assert res.returncode == 2
        assert "--duration" in out and ("finite" in out or "positive" in out), out
        assert "recorded" not in out  # nothing started


def test_collector_without_its_extra_names_the_install_command(tmp_path: Path) -> None:
    code = ("import sys\n"
            "for m in ('starlette', 'uvicorn', 'boto3', 'botocore'):\n"
            "    sys.modules[m] = None  # as if not installed\n"
            "from agent.cli import main\n"
            f"sys.exit(main(['collector', '--data', {str(tmp_path)!r}, "
            "'--listen', '127.0.0.1:0']))\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=False)
    out = _clean(res)
    assert res.returncode == 1
    assert "pip install 'wearcap[collector]'" in out


def test_collector_report_off_a_terminal_does_not_cut_ids(tmp_path: Path) -> None:
    long_id = "factory-07-line-3-rig-000123"
    enr = run_cli("collector", "enroll", long_id, "--data", str(tmp_path))
    assert enr.returncode == 0, enr.stderr
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    res = subprocess.run([sys.executable, "-m", "agent", "collector", "report", "--data",
                          str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                         timeout=60, check=False, env=env)
    assert res.returncode == 0, res.stderr
    assert long_id in res.stdout
    assert "verified" in res.stdout and "missing seqs" in res.stdout
    assert "…" not in res.stdout
