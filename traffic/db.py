"""Database access: connections, schema migrations, extension detection.

psycopg 3 throughout. Migrations are the ``*.sql`` files beside this module,
applied once each in name order and recorded in ``schema_migrations``; they
must run unchanged on plain PostgreSQL and on TimescaleDB (TimescaleDB-only
steps check the catalog inside the SQL). Errors from psycopg are mapped
to :class:`traffic.errors.StorageError` here.

TimescaleDB: nothing creates the extension except :func:`ensure_timescaledb`,
reached through ``migrate(dsn, timescaledb=True)`` (``traffic migrate
--timescaledb``), which refuses with a :class:`StorageError` where the server
lacks it and converts an existing plain or partitioned layout
(``timescaledb_setup()`` in ``120_timescaledb.sql``). The layout is decided by
whether ``detector_counts`` is a hypertable (:func:`has_timescaledb`), never
by the extension alone.
"""

from __future__ import annotations

import logging
from datetime import datetime
from importlib import resources

import psycopg
from psycopg import sql

from traffic.errors import StorageError

log = logging.getLogger(__name__)

MIGRATIONS_PACKAGE = "traffic.migrations"
_LOCK_KEY = 0x7AFF1C  # advisory lock so concurrent services do not migrate twice


def connect(dsn: str, *, autocommit: bool = False) -> psycopg.Connection:
    """Open a connection, mapping failures to StorageError."""
    try:
        return psycopg.connect(dsn, autocommit=autocommit)
    except psycopg.Error as exc:
        raise StorageError(f"cannot connect to PostgreSQL: {exc}") from exc


def migration_names() -> list[str]:
    files = resources.files(MIGRATIONS_PACKAGE)
    return sorted(f.name for f in files.iterdir() if f.name.endswith(".sql"))


TIMESCALEDB_UNAVAILABLE = "TimescaleDB extension not available on this server"


def timescaledb_available(conn: psycopg.Connection) -> bool:
    """True when the server can ``CREATE EXTENSION timescaledb`` (the package is installed)."""
    row = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
    return row is not None


def timescaledb_installed(conn: psycopg.Connection) -> bool:
    """True when this database has the extension (its tables may still be plain ones)."""
    row = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    return row is not None


def is_hypertable(conn: psycopg.Connection, table: str) -> bool:
    """True when ``table`` is a TimescaleDB hypertable (``timescaledb_information.hypertables``)."""
    row = conn.execute("SELECT traffic_is_hypertable(%s)", (table,)).fetchone() if _has_helper(conn) else None
    if row is not None:
        return bool(row[0])
    if conn.execute("SELECT to_regclass('timescaledb_information.hypertables')").fetchone()[0] is None:  # type: ignore[index]
        return False
    found = conn.execute(
        "SELECT 1 FROM timescaledb_information.hypertables h"
        " JOIN pg_namespace n ON n.nspname = h.hypertable_schema"
        " JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = h.hypertable_name"
        " WHERE c.oid = to_regclass(%s)", (table,)).fetchone()
    return found is not None


def _has_helper(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT to_regproc('traffic_is_hypertable')").fetchone()[0] is not None  # type: ignore[index]


def has_timescaledb(conn: psycopg.Connection) -> bool:
    """True when the TimescaleDB layout is in use: ``detector_counts`` is a hypertable.

    Not merely "the extension is installed": an extension added after a plain
    migrate leaves the tables plain until ``migrate(dsn, timescaledb=True)``.
    """
    return is_hypertable(conn, "detector_counts")


def ensure_timescaledb(conn: psycopg.Connection) -> bool:
    """``CREATE EXTENSION IF NOT EXISTS timescaledb``; return True if it was created now.

    Raises :class:`StorageError` (message starting with
    :data:`TIMESCALEDB_UNAVAILABLE`) when the server does not have the
    extension, or cannot load it (not in ``shared_preload_libraries``, no
    privilege). Commits.
    """
    try:
        if timescaledb_installed(conn):
            return False
        if not timescaledb_available(conn):
            raise StorageError(
                f"{TIMESCALEDB_UNAVAILABLE}: pg_available_extensions has no timescaledb; install the "
                "TimescaleDB package for this PostgreSQL and add timescaledb to shared_preload_libraries, "
                "or migrate without --timescaledb (plain PostgreSQL layout)")
        with conn.transaction():
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        conn.commit()
    except psycopg.Error as exc:
        raise StorageError(f"{TIMESCALEDB_UNAVAILABLE}: CREATE EXTENSION timescaledb failed: {exc}") from exc
    log.info("created the timescaledb extension")
    return True


def migrate(dsn: str, *, timescaledb: bool = False) -> list[str]:
    """Apply pending migrations; return the names applied now.

    ``timescaledb=True`` (``traffic migrate --timescaledb``) first creates the
    extension (:func:`ensure_timescaledb`, refusing with :class:`StorageError`
    where it is unavailable), then, after the migrations, brings the
    TimescaleDB layout up to date with ``timescaledb_setup()``
    (``120_timescaledb.sql``): converts a plain or natively partitioned
    ``detector_counts`` and ``controller_events`` into hypertables (one
    transaction; the tables are locked while rows are copied), sets
    compression, (re)creates the continuous aggregate and its refresh policy,
    then refreshes the aggregate over the whole range once. Idempotent.
    Without the flag, a database whose extension was added later keeps its
    layout and a warning names the command.
    """
    applied_now: list[str] = []
    try:
        if timescaledb:
            with connect(dsn, autocommit=True) as conn:
                ensure_timescaledb(conn)
        with connect(dsn) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
            try:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
                )
                conn.commit()
                done = {r[0] for r in conn.execute("SELECT name FROM schema_migrations")}
                for name in migration_names():
                    if name in done:
                        continue
                    text = resources.files(MIGRATIONS_PACKAGE).joinpath(name).read_text()
                    log.info("applying migration %s", name)
                    with conn.transaction():
                        conn.execute(sql.SQL(text))  # trusted file shipped with the package
                        conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (name,))
                    applied_now.append(name)
                if timescaledb:
                    with conn.transaction():
                        steps = conn.execute("SELECT timescaledb_setup()").fetchone()[0]  # type: ignore[index]
                    for step in steps or []:
                        (log.warning if " NOT " in step else log.info)("timescaledb_setup: %s", step)
                elif timescaledb_installed(conn) and not has_timescaledb(conn):
                    log.warning("the timescaledb extension is installed but detector_counts is not a hypertable: "
                                "the plain PostgreSQL layout stays in use; run `traffic migrate --timescaledb` "
                                "to convert")
                conn.commit()
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
                conn.commit()
        if timescaledb:
            refresh_rollup(dsn)
    except psycopg.Error as exc:
        raise StorageError(f"migration failed: {exc}") from exc
    return applied_now


def refresh_rollup(dsn: str, start: datetime | None = None, end: datetime | None = None) -> bool:
    """``CALL refresh_continuous_aggregate('detector_counts_15min_cagg', start, end)``; False without it.

    ``start=None`` means from the beginning; ``end=None`` means 15 minutes ago
    (the refresh policy's end offset). Runs in autocommit, as TimescaleDB
    requires. Use it after rows arrive for buckets older than the policy's
    7-day window.
    """
    try:
        with connect(dsn, autocommit=True) as conn:
            if conn.execute("SELECT to_regclass('detector_counts_15min_cagg')").fetchone()[0] is None:  # type: ignore[index]
                return False
            if end is None:
                end = conn.execute("SELECT now() - INTERVAL '15 minutes'").fetchone()[0]  # type: ignore[index]
            conn.execute("CALL refresh_continuous_aggregate('detector_counts_15min_cagg', %s::timestamptz,"
                         " %s::timestamptz)", (start, end))
    except psycopg.Error as exc:
        raise StorageError(f"refreshing detector_counts_15min_cagg failed: {exc}") from exc
    return True


def create_database(admin_dsn: str, name: str) -> None:
    """Create database ``name`` if missing (used by tests and the demo)."""
    with connect(admin_dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(admin_dsn: str, name: str) -> None:
    with connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
