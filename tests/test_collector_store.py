"""The collector store interface, the same assertions on every engine (SQLite; PostgreSQL in
``tests/test_collector_pg.py`` through the ``any_store`` fixture of ``tests/stores.py``)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agent.collector import auth, migrations
from agent.collector.store import DB_NAME, Store, Upload, open_store
from tests.stores import store_contract_cases


def _sqlite(tmp_path: Path) -> Store:
    return open_store(tmp_path)


@pytest.mark.parametrize("case", store_contract_cases(), ids=lambda c: c.__name__)
def test_sqlite_store_contract(tmp_path: Path, case) -> None:
    store = _sqlite(tmp_path)
    try:
        case(store)
    finally:
        store.close()


def test_migrations_are_complete_and_ordered() -> None:
    migrations.check()
    assert migrations.LATEST >= 2
    broken = (*migrations.MIGRATIONS, migrations.Migration(99, "x", ("SELECT 1",), ()))
    with pytest.raises(AssertionError):
        migrations.check(broken)


def test_sqlite_upgrades_a_data_directory_from_before_migrations(tmp_path: Path) -> None:
    """A collector.sqlite3 written before migrations existed opens, keeps its rows, upgrades."""
    conn = sqlite3.connect(tmp_path / DB_NAME)
    for stmt in migrations.MIGRATIONS[0].sqlite:
        conn.execute(stmt)
    conn.execute("INSERT INTO devices (id, created, first_seq) VALUES ('old-1', 1.0, 3)")
    conn.commit()
    conn.close()
    store = open_store(tmp_path)
    try:
        assert store.schema_version() == migrations.LATEST
        dev = store.device("old-1")
        assert dev is not None and dev.first_seq == 3
        store.put_document("status", "old-1", "latest", {"ok": True}, 2.0)
        assert store.documents("status")[0].body == {"ok": True}
    finally:
        store.close()
    again = open_store(tmp_path)  # reopening applies nothing twice
    assert again.schema_version() == migrations.LATEST
    again.close()


def test_enroll_refuses_out_of_range_first_seq(tmp_path: Path) -> None:
    from agent.errors import InputError

    store = _sqlite(tmp_path)
    for bad in (-1, 2**63, 10**20):
        with pytest.raises(InputError):
            auth.enroll(store, "dev-1", first_seq=bad)
    assert store.devices() == []
    store.close()


def test_upload_record_round_trip(tmp_path: Path) -> None:
    store = _sqlite(tmp_path)
    up = Upload("a" * 32, "d", "d-00000001", 1, "0" * 64, 10, 0, "open", 1.0, 2.0, "", "")
    assert store.insert_upload(up, {})
    assert store.upload(up.id) == up
    store.close()
