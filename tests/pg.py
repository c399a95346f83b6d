"""A real PostgreSQL server for the tests: Debian's ``postgresql`` binaries, a cluster in a
temporary directory, run as an unprivileged user (PostgreSQL refuses to run as root, and CI
runs as root), on a free loopback port. Stopped at the end of the session.

    server = PgServer.start(tmp)      # initdb + postgres; server.url(dbname)
    url = server.new_database()       # a fresh, empty database per test
    server.stop()

Without the server binaries the tests that need them skip (``require_postgres``); in CI a
skip fails the run.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests import servers
from tests.servers import free_ports


def binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def require_postgres() -> Path:
    return servers.require(binaries(), "PostgreSQL server binaries not found (install.sh "
                           "--dev installs postgresql)")


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
        port = free_ports(1)[0]
        # fsync off: these are tests of the collector's logic, not of PostgreSQL's durability
        proc = servers.spawn(
            [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(root),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
             "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=200", "-c", "shared_buffers=32MB"],
            root, "postgres.log", preexec_fn=demote)
        srv = cls(bindir, root, port, proc, user)
        try:
            servers.wait_ready(proc, root / "postgres.log", srv._probe, 60.0, "PostgreSQL")
        except BaseException:
            srv.stop()
            raise
        return srv

    def _probe(self) -> None:
        import psycopg

        psycopg.connect(self.url("postgres"), connect_timeout=2).close()

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://wearcap@127.0.0.1:{self.port}/{dbname}"

    def new_database(self) -> str:
        import psycopg

        name = f"t{os.getpid()}_{next(self._n)}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        servers.stop(self.proc, self.root, group=False, timeout=30)  # SIGTERM: smart shutdown
