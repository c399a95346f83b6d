"""A real PostgreSQL server for the tests: Debian's ``postgresql`` binaries, a cluster in a
temporary directory, run as an unprivileged user (PostgreSQL refuses to run as root, and CI
runs as root), on a free loopback port. Stopped at the end of the session.

    server = PgServer.start(tmp)      # initdb + postgres; server.url(dbname)
    url = server.new_database()       # a fresh, empty database per test
    server.stop()

With ``CI=true`` a missing server is a failure, not a skip (``require_postgres``).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest


def binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def require_postgres() -> Path:
    bindir = binaries()
    if bindir is None:
        why = "PostgreSQL server binaries not found (install.sh --dev installs postgresql)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    return bindir


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _user() -> pwd.struct_passwd | None:
    """The account to run as: ourselves unless root, then ``postgres`` or ``nobody``."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("no unprivileged account to run PostgreSQL as")


@dataclass
class PgServer:
    bindir: Path
    root: Path
    port: int
    proc: subprocess.Popen[bytes]
    user: pwd.struct_passwd | None
    _n: itertools.count[int] = field(default_factory=itertools.count)

    @classmethod
    def start(cls, root: Path, bindir: Path | None = None) -> PgServer:
        bindir = bindir or require_postgres()
        user = _user()
        root.mkdir(parents=True, exist_ok=True)
        data = root / "data"

        def demote() -> None:
            if user is not None:
                os.setgid(user.pw_gid)
                os.setuid(user.pw_uid)

        if user is not None:
            os.chown(root, user.pw_uid, user.pw_gid)
            # the user must reach the directory: open every parent for traversal
            for parent in root.parents:
                if parent == Path("/"):
                    break
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    os.chmod(parent, mode | 0o001)
        subprocess.run([str(bindir / "initdb"), "-D", str(data), "-U", "wearcap",
                        "--auth=trust", "-E", "UTF8", "--no-sync"], check=True,
                       preexec_fn=demote, capture_output=True, cwd=root)
        port = _free_port()
        log = open(root / "postgres.log", "wb")  # noqa: SIM115
        # fsync off: these are tests of the collector's logic, not of PostgreSQL's durability
        proc = subprocess.Popen(
            [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(root),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
             "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=200", "-c", "shared_buffers=32MB"],
            preexec_fn=demote, stdout=log, stderr=subprocess.STDOUT, cwd=root,
            start_new_session=True)
        log.close()
        srv = cls(bindir, root, port, proc, user)
        try:
            srv._wait_ready()
        except BaseException:
            srv.stop()
            raise
        return srv

    def _wait_ready(self, timeout: float = 60.0) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("postgres exited:\n" +
                                   (self.root / "postgres.log").read_text()[-2000:])
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://wearcap@127.0.0.1:{self.port}/{dbname}"

    def new_database(self) -> str:
        import psycopg

        name = f"t{os.getpid()}_{next(self._n)}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: smart shutdown
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)
