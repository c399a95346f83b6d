"""The collector on PostgreSQL: a real server (Debian's postgresql) started for this module as
an unprivileged user. The same store cases as SQLite, plus what only a shared database can
show: two nodes racing for one segment, and migrations run by nodes starting together."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from agent.collector import migrations
from agent.collector.pgstore import PostgresStore
from agent.collector.store import Upload, open_store
from tests.pg import PgServer
from tests.stores import store_contract_cases
from tests.test_collector_support import ServerThread

pytestmark = pytest.mark.services


@pytest.fixture
def pg(pg_server: PgServer) -> PgServer:
    return pg_server


@pytest.mark.parametrize("case", store_contract_cases(), ids=lambda c: c.__name__)
def test_postgres_store_contract(pg: PgServer, case) -> None:
    store = open_store(pg.new_database())
    assert isinstance(store, PostgresStore)
    try:
        case(store)
    finally:
        store.close()


def test_nodes_starting_together_migrate_once(pg: PgServer) -> None:
    url = pg.new_database()
    stores: list[PostgresStore] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            stores.append(PostgresStore(url))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(stores) == 4
    assert {s.schema_version() for s in stores} == {migrations.LATEST}
    rows = stores[0]._rows("SELECT version FROM schema_migrations ORDER BY version")
    assert [r["version"] for r in rows] == list(range(1, migrations.LATEST + 1))
    for s in stores:
        s.close()


def test_two_nodes_race_for_one_segment(pg: PgServer) -> None:
    """Many concurrent creations of one segment through separate pools: exactly one row."""
    url = pg.new_database()
    a, b = PostgresStore(url), PostgresStore(url)
    wins: list[bool] = []

    def create(store: PostgresStore, i: int) -> None:
        up = Upload(f"{i:032x}", "d", "d-00000001", 1, "0" * 64, 10, 0, "open", 1.0, 2.0,
                    "", "")
        wins.append(store.insert_upload(up, {}))

    threads = [threading.Thread(target=create, args=((a, b)[i % 2], i)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert wins.count(True) == 1 and len(wins) == 16
    live = a.find_segment("d", "d-00000001")
    assert live is not None
    # the compare-and-set lets only one of two nodes advance the offset
    results = [a.set_offset(live.id, 5, "open", 3.0, expect=0),
               b.set_offset(live.id, 7, "open", 3.0, expect=0)]
    assert results == [True, False]
    a.close()
    b.close()


def test_collector_serves_uploads_with_postgres_metadata(pg: PgServer, tmp_path: Path) -> None:
    store = open_store(pg.new_database())
    srv = ServerThread(tmp_path / "node", store=store).start()
    try:
        token = srv.enroll("pg-dev")
        c = srv.client(token)
        data = b"segment bytes " * 5000
        c.upload("pg-dev", 0, data, chunk=16 * 1024)
        got = c.get("/devices/pg-dev/segments").json()
        assert got["verified"] == 1 and got["complete"] is True
        assert not (tmp_path / "node" / "collector.sqlite3").exists()
    finally:
        srv.stop()


def test_cli_enrolls_into_postgres(pg: PgServer, tmp_path: Path) -> None:
    from tests.conftest import run_cli

    url = pg.new_database()
    r = run_cli("collector", "enroll", "cli-dev", "--data", str(tmp_path), "--store", url,
                "--first-seq", "12", "--json")
    assert r.returncode == 0, r.stderr
    r = run_cli("collector", "report", "--data", str(tmp_path), "--store", url, "--json")
    assert r.returncode == 0, r.stderr
    assert '"first_seq": 12' in r.stdout


def test_unreachable_postgres_is_a_clear_error(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    r = run_cli("collector", "enroll", "x", "--data", str(tmp_path), "--store",
                "postgresql://nobody@127.0.0.1:1/none")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "cannot open the collector database" in r.stderr
