"""Shared fixtures. Tests use real components (PyAV, SQLite, pseudo-terminals, a private
D-Bus with a user-space BlueZ, real HTTP servers on loopback); only picamera2 is faked.

Skips: with ``CI=true`` every skipped test fails the run, so a test dependency that
``install.sh --dev`` did not provide (D-Bus, BlueZoo, Node, FFmpeg, a database server, ...)
can never pass as skipped coverage. The one exception is a test that does not apply to this
kind of machine at all (a Pi-only check on a PC): its reason starts with ``NOT_APPLICABLE``.
Elsewhere skips are reported as skipped (``-ra`` lists each with its reason).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.pg import PgServer
    from tests.seaweed import Seaweed

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI") == "true"
NOT_APPLICABLE = "not applicable on this machine: "


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    outcome = yield
    rep = outcome.get_result()
    if not (IN_CI and rep.skipped) or hasattr(rep, "wasxfail"):
        return
    reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
    if reason.startswith(("Skipped: " + NOT_APPLICABLE, NOT_APPLICABLE)):
        return
    rep.outcome = "failed"
    rep.longrepr = (f"skipped in CI (CI=true), which must run every test: {reason}\n"
                    "install.sh --dev must provide what this test needs")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", default=False,
                     help="run the long versions of the harnesses (soaks, hundreds of faults)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The long versions run for many minutes: the suite's per-test timeout (300 s, which
    catches a hung test in CI) becomes an hour."""
    if config.getoption("--long"):
        for item in items:
            item.add_marker(pytest.mark.timeout(3600))


@pytest.fixture(autouse=True)
def _private_run_dir(tmp_path_factory: pytest.TempPathFactory,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's services write their live status (agent.livestatus) to a directory of
    its own, never to another test's or the machine's /run/wearcap."""
    monkeypatch.setenv("WEARCAP_RUN_DIR", str(tmp_path_factory.mktemp("run")))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One real PostgreSQL for the session (started on first use); tests take a fresh
    database each (``pg_server.new_database()``)."""
    from tests.pg import PgServer

    server = PgServer.start(Path(tempfile.mkdtemp(prefix="wearcap-pg-")))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[Seaweed]:
    """One real SeaweedFS (S3, with auth) for the session; tests take a bucket each."""
    from tests.seaweed import Seaweed

    server = Seaweed.start(Path(tempfile.mkdtemp(prefix="wearcap-s3-")))
    yield server
    server.stop()


@pytest.fixture
def long_run(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--long"))


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m agent ARGS`` as a user would, in a child process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True,
                          text=True, timeout=timeout, env=full_env, cwd=cwd or REPO,
                          check=False)
