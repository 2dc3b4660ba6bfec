"""Engineer locks: a locked controller keeps its plan and is never re-optimised.

Why a table and not a flag in memory: the lock must survive a service
restart and be visible to every central instance and to the dashboards.
Every lock and unlock is also logged with who and why (migration 200).
"""

from __future__ import annotations

import psycopg

from controller._db import storage_errors as _storage
from controller.lifecycle import Lock
from traffic.errors import PlanError, StorageError
from traffic.topics import check_id

__all__ = ["Lock", "lock", "unlock", "locked"]


def lock(conn: psycopg.Connection, controller_id: str, reason: str, actor: str) -> Lock:
    """Lock ``controller_id`` (re-locking updates who and why). A reason is required."""
    check_id(controller_id, "controller id")
    if not reason.strip() or not actor.strip():
        raise PlanError("a lock needs an actor and a reason")
    with _storage(f"lock {controller_id}"), conn.transaction():
        row = conn.execute(
            "INSERT INTO controller_locks (controller_id, actor, reason) VALUES (%s, %s, %s)"
            " ON CONFLICT (controller_id) DO UPDATE SET actor = EXCLUDED.actor, reason = EXCLUDED.reason,"
            " locked_at = now() RETURNING locked_at", (controller_id, actor, reason)).fetchone()
        conn.execute("INSERT INTO controller_lock_events (controller_id, action, actor, reason)"
                     " VALUES (%s, 'lock', %s, %s)", (controller_id, actor, reason))
    if row is None:  # INSERT ... ON CONFLICT DO UPDATE ... RETURNING always returns the row
        raise StorageError(f"lock {controller_id}: the database returned no row")
    return Lock(controller_id, actor, reason, row[0])


def unlock(conn: psycopg.Connection, controller_id: str, actor: str, reason: str = "") -> bool:
    """Remove the lock; return False if the controller was not locked."""
    with _storage(f"unlock {controller_id}"), conn.transaction():
        cur = conn.execute("DELETE FROM controller_locks WHERE controller_id = %s", (controller_id,))
        if cur.rowcount:
            conn.execute("INSERT INTO controller_lock_events (controller_id, action, actor, reason)"
                         " VALUES (%s, 'unlock', %s, %s)", (controller_id, actor, reason))
        return cur.rowcount > 0


def locked(conn: psycopg.Connection) -> dict[str, Lock]:
    """All current locks by controller id."""
    with _storage("read locks"):
        rows = conn.execute("SELECT controller_id, actor, reason, locked_at FROM controller_locks").fetchall()
    return {r[0]: Lock(*r) for r in rows}
