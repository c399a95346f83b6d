"""The PostgreSQL engine of the collector store: psycopg 3 with its connection pool.

Several stateless collector nodes share one database. Every method of the store is one
transaction (READ COMMITTED); the races that matter are settled by the schema, not by locks
in a process: the unique index on live (device, segment_id) decides which of two concurrent
creations wins, and the compare-and-set in ``set_offset`` which of two PATCHes advances an
upload. Migrations run under a transaction-scoped advisory lock, so nodes may start together.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from agent.collector.sqlstore import Query, Rows, SqlStore
from agent.errors import CollectorError

MIGRATION_LOCK = 0x77656172  # "wear"
_PLACEHOLDER = re.compile(r"\?")


def _redact(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


class PostgresStore(SqlStore):
    engine = "postgresql"

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 8,
                 timeout: float = 10.0) -> None:
        try:
            import psycopg
            from psycopg.rows import dict_row
            from psycopg_pool import ConnectionPool
        except ImportError as exc:
            raise CollectorError("the PostgreSQL store needs psycopg and psycopg_pool "
                                 "(pip install 'wearcap[collector]')") from exc
        self.url = url
        self._errors: tuple[type[Exception], ...] = (psycopg.Error,)
        try:
            # one direct connection first: a wrong URL fails at once with the server's reason,
            # not after the pool's retries
            psycopg.connect(url, connect_timeout=max(1, int(timeout))).close()
            self.pool: Any = ConnectionPool(
                url, min_size=min_size, max_size=max_size, timeout=timeout, open=False,
                kwargs={"row_factory": dict_row, "autocommit": False,
                        "application_name": "wearcap-collector"})
            self.pool.open(wait=True, timeout=timeout)
            with self._tx() as q:
                q("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
                self._migrate(q)
        except Exception as exc:
            if hasattr(self, "pool"):
                self.pool.close()
            raise CollectorError(f"{_redact(url)}: cannot open the collector database: "
                                 f"{exc}") from exc

    @contextmanager
    def _tx(self) -> Iterator[Query]:
        with self.pool.connection() as conn, conn.transaction():
            cur = conn.cursor()

            def q(sql: str, params: Sequence[Any]) -> tuple[Rows, int]:
                cur.execute(_PLACEHOLDER.sub("%s", sql), tuple(params))
                rows: Rows = list(cur.fetchall()) if cur.description else []
                return rows, cur.rowcount

            yield q

    def describe(self) -> str:
        return f"PostgreSQL {_redact(self.url)}"

    def close(self) -> None:
        self.pool.close()
