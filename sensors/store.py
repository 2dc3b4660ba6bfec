"""The detector-data store: idempotent bulk writes into PostgreSQL.

Rows go in with ``COPY`` into a per-connection temporary staging table and
then ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` into the real table.
COPY alone cannot skip duplicates, and QoS 1 *will* redeliver: this way a
redelivered report changes nothing and the write still runs at COPY speed.
The number of rows the INSERT reports is the number newly stored.

A row PostgreSQL refuses (or text the driver cannot encode for it) does not
fail the batch: :meth:`CountStore.write_batch` narrows the refusal down to
the messages responsible, by halving the batch in savepoints, stores each of
them as a dead letter with the database's reason and stores the rest (see
``docs/pipeline.md``, "Poison").

Errors are mapped to :class:`traffic.errors.StorageError`; its
``transient`` attribute tells the ingest service whether to spool the batch
and retry (the database is away) or to give up on the data (the database
refused it, and would again).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import psycopg
import psycopg_pool
from psycopg import sql

from sensors import partitions
from sensors.records import Batch, CountRow, DeadLetter, EventRow, StatusRow, safe_text
from traffic.errors import StorageError
from traffic.messages import OFFLINE, StatusMessage

log = logging.getLogger(__name__)

COUNT_COLUMNS = ("controller_id", "detector_id", "interval_start", "interval_s", "vehicle_count",
                 "occupancy_pct", "motorcycle_count", "received_at")
EVENT_COLUMNS = ("device_id", "ts", "event_code", "event_param")
# PostgreSQL type of each column (for binary COPY users such as benchmarks).
COUNT_TYPES = ("text", "text", "timestamptz", "int4", "int4", "float4", "int4", "timestamptz")
EVENT_TYPES = ("text", "timestamptz", "int2", "int4")

_STAGE_COUNTS = "_ingest_stage_counts"
_STAGE_EVENTS = "_ingest_stage_events"

# Column types of the staging tables, spelled out rather than ``LIKE`` so a
# pooled connection can be configured before the schema exists.
_STAGING_DDL = (
    sql.SQL(
        "CREATE TEMP TABLE IF NOT EXISTS {} (controller_id text, detector_id text, interval_start timestamptz,"
        " interval_s integer, vehicle_count integer, occupancy_pct real, motorcycle_count integer,"
        " received_at timestamptz) ON COMMIT DELETE ROWS"
    ).format(sql.Identifier(_STAGE_COUNTS)),
    sql.SQL(
        "CREATE TEMP TABLE IF NOT EXISTS {} (device_id text, ts timestamptz, event_code smallint,"
        " event_param integer) ON COMMIT DELETE ROWS"
    ).format(sql.Identifier(_STAGE_EVENTS)),
)

# Errors that mean "this data will never go in", as opposed to "not now".
_PERMANENT = (psycopg.DataError, psycopg.IntegrityError, psycopg.errors.ProgramLimitExceeded, UnicodeError)

# What a refused *row* looks like: the server's data errors (class 22: bad
# encoding, NUL, out of range, too long...) and integrity errors (class 23:
# check, not-null, foreign key; duplicates never get here, the writes skip
# them), a row too big for an index (54000), and text the driver cannot
# encode for PostgreSQL (lone surrogates) raised before anything is sent.
# Anything else (connection lost, pool timeout, missing table) is about the
# database, not the row, and is never turned into dead letters.
_ROW_ERRORS = (psycopg.DataError, psycopg.IntegrityError, psycopg.errors.ProgramLimitExceeded, UnicodeError)


def is_row_error(exc: BaseException) -> bool:
    """True when ``exc`` is the database (or driver) refusing a row's content."""
    if isinstance(exc, psycopg.errors.UniqueViolation):
        return False  # handled by the idempotent path; reaching here would be a bug, not data
    return isinstance(exc, _ROW_ERRORS)


def describe_refusal(exc: BaseException) -> str:
    """The database's reason, one line, safe to store as text (see :func:`safe_text`)."""
    if isinstance(exc, psycopg.Error):
        diag = exc.diag
        text = f"{exc.sqlstate or type(exc).__name__} {diag.message_primary or str(exc)}"
        if diag.constraint_name and diag.constraint_name not in text:
            text += f" (constraint {diag.constraint_name})"
        if diag.column_name:
            text += f" (column {diag.column_name})"
        if diag.context:
            text += f" [{diag.context.splitlines()[0]}]"
    elif isinstance(exc, UnicodeEncodeError):
        text = (f"text not storable in PostgreSQL: {exc.reason} at position {exc.start} "
                f"({exc.object[exc.start:exc.end]!a})")
    else:
        text = f"{type(exc).__name__}: {exc}"
    return safe_text(" ".join(text.split()))[:400]


def storage_error(exc: BaseException, action: str) -> StorageError:
    """Map a psycopg / pool error to StorageError, marking whether a retry can help."""
    err = StorageError(f"{action} failed: {type(exc).__name__}: {exc}".strip())
    err.transient = not isinstance(exc, _PERMANENT)  # type: ignore[attr-defined]
    err.__cause__ = exc
    return err


def is_transient(exc: StorageError) -> bool:
    """True when the failure was the database being away, not the data being bad."""
    return bool(getattr(exc, "transient", True))


@dataclass(frozen=True)
class BatchResult:
    """What one :meth:`CountStore.write_batch` did (new rows; the rest were duplicates)."""

    counts_stored: int = 0
    counts_duplicate: int = 0
    events_stored: int = 0
    events_duplicate: int = 0
    dead_letters: int = 0
    statuses: int = 0
    refused: int = 0      # messages the database refused, stored as dead letters (included in dead_letters)

    def __add__(self, other: BatchResult) -> BatchResult:
        return BatchResult(*(a + b for a, b in zip(self, other, strict=False)))

    def __iter__(self) -> Iterator[int]:
        return iter((self.counts_stored, self.counts_duplicate, self.events_stored, self.events_duplicate,
                     self.dead_letters, self.statuses, self.refused))


class CountStore:
    """Pooled, idempotent writer for detector counts, events, dead letters and status.

    The pool checks a connection before lending it, so a backend killed by an
    outage is replaced instead of failing the next batch. ``timeout`` bounds
    how long a write waits for a connection: the ingest service would rather
    spool a batch than stall while the database is down.
    """

    def __init__(self, dsn: str, *, min_size: int = 1, max_size: int = 4, timeout: float = 3.0) -> None:
        self._dsn = dsn
        self._timeout = timeout
        self._known_days: set[date] = set()   # UTC days whose partition exists (or needs none)
        self._pool = psycopg_pool.ConnectionPool(
            dsn,
            min_size=min_size,
            max_size=max(min_size, max_size),
            timeout=timeout,
            open=False,
            configure=self._configure,
            check=psycopg_pool.ConnectionPool.check_connection,
            kwargs={"connect_timeout": max(1, int(timeout))},
            # Give up a reconnect attempt quickly: the next write asks the pool
            # to grow again, so recovery follows demand instead of an
            # ever-longer exponential backoff after a long outage.
            reconnect_timeout=max(timeout, 1.0),
            name="sensors-store",
        )
        # wait=False: a store opened while the database is down still works
        # (writes fail transiently until it returns).
        self._pool.open(wait=False)

    # ---- lifecycle ------------------------------------------------------
    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> CountStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _configure(conn: psycopg.Connection) -> None:
        for ddl in _STAGING_DDL:
            conn.execute(ddl)
        conn.commit()

    @contextmanager
    def _transaction(self, action: str) -> Iterator[psycopg.Connection]:
        try:
            with self._pool.connection(timeout=self._timeout) as conn:
                with conn.transaction():
                    yield conn
        except (psycopg.Error, psycopg_pool.PoolTimeout, UnicodeError) as exc:
            raise storage_error(exc, action) from exc

    def ping(self) -> bool:
        """True if a connection can be had and answers (used by the replay loop)."""
        try:
            with self._transaction("ping") as conn:
                conn.execute("SELECT 1")
            return True
        except StorageError:
            return False

    # ---- writes ---------------------------------------------------------
    def _ensure_partitions(self, rows: Sequence[CountRow]) -> None:
        """Make sure each UTC day of ``rows`` has its partition, asking the database once per new day.

        Outside the write transaction on purpose: creating a partition locks
        the default partition, and holding that for a whole batch would
        serialise the workers. A failure here is logged, not raised: the
        DEFAULT partition takes the rows anyway, and if the database is down
        the write that follows says so.
        """
        if not rows:
            return
        days = {partitions.utc_day(t) for t in {r.interval_start for r in rows}} - self._known_days
        if not days:
            return
        try:
            with self._transaction("ensure partitions") as conn:
                for start, end in partitions.day_ranges(days, datetime.now(UTC).date()):
                    conn.execute("SELECT ensure_partitions(%s, %s)", (start, end))
        except StorageError as exc:
            log.warning("could not prepare partitions for %s: %s", sorted(days), exc)
            return
        self._known_days |= days

    def write_batch(self, batch: Batch) -> BatchResult:
        """Store a batch in one transaction; rows the database refuses become dead letters.

        Normally one savepoint holds the whole batch and that is all. If the
        database (or the driver, for text PostgreSQL cannot hold) refuses a
        row (:func:`is_row_error`), the batch is cut into messages
        (:meth:`Batch.split`) and written in halves, each in its own
        savepoint, narrowing down to the messages refused; each of those is
        stored as a dead letter with the database's reason and its raw
        payload, and everything else is stored, all in the same transaction.
        Why: one poison message must cost one dead letter, never the batch
        around it, and the same applies to a batch replayed from the spool
        (otherwise the spool would be blocked by it for good).

        Raises StorageError: transient when the database is away (the caller
        spools the batch), permanent only if even the dead letters are
        refused (then nothing was stored and the caller sets the batch aside).
        """
        self._ensure_partitions(batch.counts)
        with self._transaction("write batch") as conn:
            try:
                with conn.transaction():
                    return _write_rows(conn, batch)
            except _ROW_ERRORS as exc:
                if not is_row_error(exc):
                    raise
                log.warning("database refused a batch of %d rows (%s); isolating the refused messages",
                            len(batch), describe_refusal(exc))
            return _isolate(conn, batch.split())

    def write_counts(self, rows: Sequence[CountRow]) -> int:
        """Store count rows; return how many were new (a redelivery returns 0)."""
        self._ensure_partitions(rows)
        with self._transaction("write counts") as conn:
            return _insert_counts(conn, rows)

    def write_events(self, rows: Sequence[EventRow]) -> int:
        """Store event rows; return how many were new."""
        with self._transaction("write events") as conn:
            return _insert_events(conn, rows)

    def write_dead_letters(self, items: Sequence[DeadLetter]) -> int:
        with self._transaction("write dead letters") as conn:
            return _insert_dead_letters(conn, items)

    def upsert_status(self, status: StatusMessage | StatusRow, *, site: str | None = None,
                      received_at: datetime | None = None) -> None:
        """Record a status: history row plus the ``controllers`` row (kept at the newest)."""
        if isinstance(status, StatusMessage):
            if site is None:
                raise StorageError("upsert_status needs the site for a StatusMessage")
            status = StatusRow(site, status.controller_id, status.state, status.mode, status.plan_id,
                               status.plan_version, status.at, status.detail,
                               received_at or datetime.now(UTC))
        with self._transaction("upsert status") as conn:
            _upsert_status(conn, status)

    # ---- reads (tests, diagnostics) -------------------------------------
    def count_rows(self, table: str, where: Mapping[str, Any] | None = None) -> int:
        """``SELECT count(*) FROM table WHERE col = value AND ...`` with safe identifiers."""
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
        params: list[Any] = []
        if where:
            query = query + sql.SQL(" WHERE ") + sql.SQL(" AND ").join(
                sql.SQL("{} = %s").format(sql.Identifier(col)) for col in where
            )
            params = list(where.values())
        with self._transaction(f"count {table}") as conn:
            row = conn.execute(query, params).fetchone()
        return int(row[0]) if row else 0


# ---------------------------------------------------------------------------
# statements (one connection, inside the caller's transaction)

_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_NULL = "\\N"


class _TextEncoder:
    """Rows to PostgreSQL text-COPY lines, caching what repeats.

    Why text and not binary COPY: psycopg's binary ``write_row`` costs a few
    microseconds per row in Python, which at tens of thousands of rows a
    second is most of a core. One f-string per row joined into one block is
    several times cheaper. Every row of one report shares its controller id,
    interval start and arrival time, and detector ids repeat across reports,
    so escaping and ``isoformat`` are done once per distinct value.
    """

    __slots__ = ("_text", "_time")

    def __init__(self) -> None:
        self._text: dict[str, str] = {}
        self._time: dict[datetime, str] = {}

    def text(self, value: str) -> str:
        out = self._text.get(value)
        if out is None:
            out = self._text[value] = value.translate(_COPY_ESCAPES)
        return out

    def time(self, value: datetime) -> str:
        out = self._time.get(value)
        if out is None:
            out = self._time[value] = value.isoformat()
        return out

    def counts(self, rows: Sequence[CountRow]) -> bytes:
        # Rows of one report are adjacent and share controller, interval and
        # arrival objects: the parts built from those are reused while they
        # stay the same object (an identity test, far cheaper than a lookup).
        text, time_ = self.text, self.time
        cached = self._text.get
        out: list[str] = []
        append = out.append
        last_c = last_s = last_r = last_i = None
        head = mid = tail = ""
        for c, d, s, i, n, o, m, r in rows:
            if c is not last_c or s is not last_s or r is not last_r or i != last_i:
                last_c, last_s, last_r, last_i = c, s, r, i
                head, mid, tail = text(c) + "\t", f"\t{time_(s)}\t{i}\t", f"\t{time_(r)}\n"
            det = cached(d) or text(d)
            append(f"{head}{det}{mid}{n}\t{o!r}\t{_NULL if m is None else m}{tail}")
        return "".join(out).encode()

    def events(self, rows: Sequence[EventRow]) -> bytes:
        text, time_ = self.text, self.time
        return "".join([f"{text(d)}\t{time_(t)}\t{c}\t{p}\n" for d, t, c, p in rows]).encode()


def _copy_idempotent(conn: psycopg.Connection, stage: str, table: str, columns: Sequence[str],
                     types: Sequence[str], rows: Sequence[Sequence[Any]], data: bytes) -> int:
    """Store rows once: optimistic COPY into the table, staging + ON CONFLICT on a duplicate.

    In the normal flow no row is a duplicate (redeliveries happen only after
    a crash, a reconnect or a database outage), so the rows go straight in
    with one COPY, as fast as PostgreSQL can take them. If any row already
    exists the COPY fails with a unique violation; the savepoint undoes it
    and the batch goes the slower idempotent way: COPY into a temporary
    staging table, then ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``.
    Either way the number returned is the number of rows newly stored.

    A value a column cannot hold (an integer out of range, a NUL in text)
    makes PostgreSQL refuse the COPY with a DataError naming the column and
    line; the caller maps that to a permanent StorageError. (Binary COPY would
    silently wrap such integers, one more reason this path is text.)
    """
    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
    try:
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(sql.Identifier(table), cols)) as copy:
                copy.write(data)
            return len(rows)
    except psycopg.errors.UniqueViolation:
        log.debug("duplicates in a batch for %s; storing it through the staging table", table)
    with conn.cursor() as cur:
        with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(sql.Identifier(stage), cols)) as copy:
            copy.write(data)
        cur.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT DO NOTHING").format(
            sql.Identifier(table), cols, cols, sql.Identifier(stage)))
        stored = max(cur.rowcount, 0)
        # ON COMMIT DELETE ROWS empties the stage at commit, but one
        # transaction can write several groups (isolating refused messages).
        cur.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(stage)))
        return stored


def _write_rows(conn: psycopg.Connection, batch: Batch) -> BatchResult:
    counts = _insert_counts(conn, batch.counts)
    events = _insert_events(conn, batch.events)
    dead = _insert_dead_letters(conn, batch.dead_letters)
    for status in batch.statuses:
        _upsert_status(conn, status)
    return BatchResult(counts, len(batch.counts) - counts, events, len(batch.events) - events,
                       dead, len(batch.statuses))


# Below this many units, try each one instead of halving further: a savepoint
# round trip per unit is cheaper than more halving levels.
_ONE_BY_ONE = 4


def _isolate(conn: psycopg.Connection, units: list[Batch]) -> BatchResult:
    """Write ``units`` (messages) inside the caller's transaction, dead-lettering those refused.

    Bisection: a group that goes in costs one savepoint, a refused group is
    halved, so k poison messages among n cost about ``2 k log2(n / k)``
    savepoints instead of n; an all-poison batch costs about n.
    """
    total = BatchResult()
    refused: list[DeadLetter] = []
    pending: list[list[Batch]] = [units]
    while pending:
        group = pending.pop()
        if len(group) > 1:
            try:
                with conn.transaction():
                    total = total + _write_rows(conn, Batch.merge(group))
                continue
            except _ROW_ERRORS as exc:
                if not is_row_error(exc):
                    raise
            if len(group) > _ONE_BY_ONE:
                mid = len(group) // 2
                pending.append(group[mid:])   # popped last: order is kept
                pending.append(group[:mid])
                continue
        for unit in group:
            try:
                with conn.transaction():
                    total = total + _write_rows(conn, unit)
            except _ROW_ERRORS as exc:
                if not is_row_error(exc):
                    raise
                refused.append(_refusal_letter(unit, exc))
    if refused:
        log.warning("%d message(s) refused by the database, stored as dead letters; first: %s: %s",
                    len(refused), refused[0].topic, refused[0].reason)
        try:
            with conn.transaction():
                _insert_dead_letters(conn, refused)
        except _ROW_ERRORS as again:
            if not is_row_error(again):
                raise
            # Only a change to dead_letters itself could get here: stop and
            # let the caller set the batch aside whole, for a human.
            raise storage_error(again, "store dead letters") from again
        total = total + BatchResult(dead_letters=len(refused), refused=len(refused))
    return total


def _refusal_letter(unit: Batch, exc: BaseException) -> DeadLetter:
    """The dead letter of one refused message (or row, when its message is unknown)."""
    reason = f"rejected by the database: {describe_refusal(exc)}"
    if unit.sources:
        src = unit.sources[0]
        return DeadLetter(src.topic, reason, src.payload, src.received_at)
    return _row_letter(unit, reason, datetime.now(UTC))


def _row_letter(unit: Batch, reason: str, received: datetime) -> DeadLetter:
    """A dead letter for a row whose message is not known (spool file from before sources)."""
    kind, row = next((k, rows[0]) for k, rows in (("counts", unit.counts), ("events", unit.events),
                                                    ("dead_letters", unit.dead_letters),
                                                    ("statuses", unit.statuses)) if rows)
    if kind == "dead_letters":
        return row  # type: ignore[return-value]  # re-sanitised on insert
    body = Batch(**{kind: [row]}).to_json()
    return DeadLetter(f"spool/{kind}", f"{reason} [row from the spool; payload is the row]", body,
                      getattr(row, "received_at", received))


def _insert_counts(conn: psycopg.Connection, rows: Sequence[CountRow]) -> int:
    if not rows:
        return 0
    return _copy_idempotent(conn, _STAGE_COUNTS, "detector_counts", COUNT_COLUMNS, COUNT_TYPES, rows,
                            _TextEncoder().counts(rows))


def _insert_events(conn: psycopg.Connection, rows: Sequence[EventRow]) -> int:
    if not rows:
        return 0
    return _copy_idempotent(conn, _STAGE_EVENTS, "controller_events", EVENT_COLUMNS, EVENT_TYPES, rows,
                            _TextEncoder().events(rows))


def _insert_dead_letters(conn: psycopg.Connection, items: Sequence[DeadLetter]) -> int:
    if not items:
        return 0
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO dead_letters (topic, reason, payload, received_at) VALUES (%s, %s, %s, %s)",
            # safe_text: a dead letter exists because something was wrong
            # with a message; its topic and reason must not fail the same way.
            [(safe_text(d.topic), safe_text(d.reason), bytes(d.payload), d.received_at) for d in items],
        )
    return len(items)


def _upsert_status(conn: psycopg.Connection, s: StatusRow) -> None:
    at = s.at or s.received_at
    online = s.state != OFFLINE
    # The last will ("offline") knows nothing of mode or plan: keep what we had.
    # A replayed older status must not overwrite a newer one: compare last_seen.
    conn.execute(
        """
        INSERT INTO controllers (controller_id, site, state, mode, active_plan_id, active_version,
                                 last_seen, updated_at)
        VALUES (%(cid)s, %(site)s, %(state)s, %(mode)s, %(plan_id)s, %(plan_version)s, %(at)s, now())
        ON CONFLICT (controller_id) DO UPDATE SET
            state = EXCLUDED.state,
            mode = CASE WHEN %(online)s THEN EXCLUDED.mode ELSE controllers.mode END,
            active_plan_id = CASE WHEN %(online)s THEN EXCLUDED.active_plan_id ELSE controllers.active_plan_id END,
            active_version = CASE WHEN %(online)s THEN EXCLUDED.active_version ELSE controllers.active_version END,
            last_seen = EXCLUDED.last_seen,
            updated_at = now()
        WHERE controllers.last_seen IS NULL OR controllers.last_seen <= EXCLUDED.last_seen
        """,
        {"cid": s.controller_id, "site": s.site, "state": s.state, "mode": s.mode if online else None,
         "plan_id": s.plan_id, "plan_version": s.plan_version, "at": at, "online": online},
    )
    conn.execute(
        "INSERT INTO controller_status (controller_id, at, state, mode, plan_id, plan_version, detail)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (controller_id, at) DO NOTHING",
        (s.controller_id, at, s.state, s.mode, s.plan_id, s.plan_version, s.detail),
    )
