"""Database access: connections, schema migrations, extension detection.

psycopg 3 throughout. Migrations are the ``*.sql`` files beside this module,
applied once each in name order and recorded in ``schema_migrations``; they
must run unchanged on plain PostgreSQL and on TimescaleDB (TimescaleDB-only
steps check ``pg_extension`` inside the SQL). Errors from psycopg are mapped
to :class:`traffic.errors.StorageError` here.
"""

from __future__ import annotations

import logging
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


def has_timescaledb(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    return row is not None


def migrate(dsn: str) -> list[str]:
    """Apply pending migrations; return the names applied now."""
    applied_now: list[str] = []
    try:
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
                        conn.execute(sql.SQL(text))  # type: ignore[arg-type]  # trusted file shipped with the package
                        conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (name,))
                    applied_now.append(name)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
                conn.commit()
    except psycopg.Error as exc:
        raise StorageError(f"migration failed: {exc}") from exc
    return applied_now


def create_database(admin_dsn: str, name: str) -> None:
    """Create database ``name`` if missing (used by tests and the demo)."""
    with connect(admin_dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(admin_dsn: str, name: str) -> None:
    with connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
