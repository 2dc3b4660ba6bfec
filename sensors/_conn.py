"""Accept either an open connection or a DSN, and map psycopg errors.

Health checks and rollup queries are called both from services that hold a
connection and from the CLI that has only a DSN; this keeps that choice out
of every query function. A connection passed in is left open (its owner
closes it); one opened from a DSN is closed here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from traffic import db
from traffic.errors import StorageError

ConnOrDsn = psycopg.Connection | str


@contextmanager
def connection(conn_or_dsn: ConnOrDsn, action: str) -> Iterator[psycopg.Connection]:
    """Yield a connection inside a transaction; psycopg errors become StorageError."""
    try:
        if isinstance(conn_or_dsn, str):
            with db.connect(conn_or_dsn) as conn:
                with conn.transaction():
                    yield conn
        else:
            with conn_or_dsn.transaction():
                yield conn_or_dsn
    except psycopg.Error as exc:
        raise StorageError(f"{action} failed: {exc}") from exc
