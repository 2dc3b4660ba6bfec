-- sensors/: storage layout of the detector time series, for both back ends.
--
-- TimescaleDB present (100_sensors.sql made the hypertables): nothing here;
-- 120_timescaledb.sql sets compression, the continuous aggregate and the
-- hypertable branch of apply_retention().
--
-- Plain PostgreSQL: detector_counts becomes a table range-partitioned by day
-- (UTC) on interval_start, with a DEFAULT partition so no row is ever
-- refused. The conversion happens only while the table is empty (a fresh
-- install); a table that already holds data is left as it is and a NOTICE
-- says so (converting a big live table is an operator's job, see
-- docs/pipeline.md). Ingest calls ensure_partitions() before writing a batch
-- for a day it has not seen; apply_retention() drops whole partitions.
-- Everything below runs unchanged on both: TimescaleDB functions are only
-- reached inside branches that checked pg_extension.

DO $$
DECLARE
    others text;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        RETURN;
    END IF;
    IF (SELECT relkind FROM pg_class WHERE oid = 'detector_counts'::regclass) <> 'r' THEN
        RETURN;  -- already partitioned
    END IF;
    IF EXISTS (SELECT 1 FROM detector_counts LIMIT 1) THEN
        RAISE NOTICE 'detector_counts holds data: left unpartitioned (see docs/pipeline.md)';
        RETURN;
    END IF;
    SELECT string_agg(DISTINCT r.ev_class::regclass::text, ', ') INTO others
      FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
     WHERE d.refobjid = 'detector_counts'::regclass
       AND r.ev_class <> 'detector_counts'::regclass
       AND r.ev_class <> to_regclass('detector_counts_15min');
    IF others IS NOT NULL THEN
        RAISE NOTICE 'detector_counts is used by % : left unpartitioned', others;
        RETURN;
    END IF;

    DROP VIEW IF EXISTS detector_counts_15min;
    DROP TABLE detector_counts;
    CREATE TABLE detector_counts (
        controller_id    text        NOT NULL,
        detector_id      text        NOT NULL,
        interval_start   timestamptz NOT NULL,
        interval_s       integer     NOT NULL,
        vehicle_count    integer     NOT NULL,
        occupancy_pct    real        NOT NULL,
        motorcycle_count integer,
        received_at      timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (controller_id, detector_id, interval_start)
    ) PARTITION BY RANGE (interval_start);
    CREATE TABLE detector_counts_default PARTITION OF detector_counts DEFAULT;
    CREATE INDEX detector_counts_time_brin ON detector_counts USING brin (interval_start);

    -- Same definition as in 100_sensors.sql (the view had to go with the table).
    CREATE VIEW detector_counts_15min AS
    SELECT
        controller_id,
        detector_id,
        date_bin(INTERVAL '15 minutes', interval_start, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
        sum(vehicle_count)::bigint                                   AS vehicle_count,
        sum(motorcycle_count)::bigint                                AS motorcycle_count,
        sum(interval_s)::integer                                     AS covered_s,
        count(*)::integer                                            AS intervals,
        (sum(occupancy_pct * interval_s) / nullif(sum(interval_s), 0))::double precision AS occupancy_pct,
        (sum(vehicle_count) * 3600.0 / nullif(sum(interval_s), 0))::double precision    AS flow_veh_h
    FROM detector_counts
    GROUP BY controller_id, detector_id, bucket;
END
$$;

-- Create the daily partitions covering [from_ts, to_ts] (UTC days) that do
-- not exist yet; return how many were created. Rows the DEFAULT partition
-- already took for such a day are moved into the new partition first
-- (PostgreSQL refuses to attach a range the default still holds rows of).
-- A no-op returning 0 when detector_counts is not partitioned (TimescaleDB
-- makes its chunks itself). Serialised by an advisory lock so concurrent
-- workers do not race on CREATE TABLE.
CREATE OR REPLACE FUNCTION ensure_partitions(from_ts timestamptz, to_ts timestamptz)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    day     date;
    lo      timestamptz;
    hi      timestamptz;
    part    text;
    created integer := 0;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = 'detector_counts'::regclass) THEN
        RETURN 0;
    END IF;
    IF from_ts IS NULL OR to_ts IS NULL OR to_ts < from_ts THEN
        RAISE EXCEPTION 'ensure_partitions: bad range % .. %', from_ts, to_ts USING ERRCODE = '22023';
    END IF;
    IF to_ts - from_ts > INTERVAL '400 days' THEN
        RAISE EXCEPTION 'ensure_partitions: range % .. % longer than 400 days', from_ts, to_ts
            USING ERRCODE = '22023';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('sensors.ensure_partitions'));
    FOR day IN
        SELECT g::date FROM generate_series((from_ts AT TIME ZONE 'UTC')::date,
                                            (to_ts AT TIME ZONE 'UTC')::date, INTERVAL '1 day') AS g
    LOOP
        part := 'detector_counts_p' || to_char(day, 'YYYYMMDD');
        CONTINUE WHEN to_regclass(quote_ident(part)) IS NOT NULL;
        lo := day::timestamp AT TIME ZONE 'UTC';
        hi := (day + 1)::timestamp AT TIME ZONE 'UTC';
        EXECUTE format('CREATE TABLE %I (LIKE detector_counts INCLUDING DEFAULTS)', part);
        EXECUTE format('WITH moved AS (DELETE FROM detector_counts_default'
                       ' WHERE interval_start >= $1 AND interval_start < $2 RETURNING *)'
                       ' INSERT INTO %I SELECT * FROM moved', part) USING lo, hi;
        EXECUTE format('ALTER TABLE detector_counts ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                       part, lo, hi);
        created := created + 1;
    END LOOP;
    RETURN created;
END
$$;

-- Forget detector data older than keep_days whole UTC days before at:
-- daily partitions entirely before the cut-off are dropped (instant, no
-- vacuum debt), stragglers in the default partition (or an unpartitioned
-- table) and old controller events are deleted. Returns what was removed.
-- Superseded by the version in 120_timescaledb.sql (both layouts).
CREATE OR REPLACE FUNCTION apply_retention(keep_days integer, at timestamptz DEFAULT now(),
                                           OUT partitions_dropped integer, OUT rows_deleted bigint)
LANGUAGE plpgsql AS $$
DECLARE
    cutoff timestamptz;
    part   record;
    n      bigint;
BEGIN
    IF keep_days IS NULL OR keep_days < 1 THEN
        RAISE EXCEPTION 'apply_retention: keep_days must be >= 1, got %', keep_days USING ERRCODE = '22023';
    END IF;
    cutoff := (((at AT TIME ZONE 'UTC')::date - keep_days)::timestamp) AT TIME ZONE 'UTC';
    partitions_dropped := 0;
    rows_deleted := 0;
    FOR part IN
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'detector_counts'::regclass AND c.relname ~ '^detector_counts_p[0-9]{8}$'
    LOOP
        IF ((to_date(substring(part.relname FROM 18), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC') <= cutoff THEN
            EXECUTE format('DROP TABLE %I', part.relname);
            partitions_dropped := partitions_dropped + 1;
        END IF;
    END LOOP;
    DELETE FROM detector_counts WHERE interval_start < cutoff;
    GET DIAGNOSTICS n = ROW_COUNT;
    rows_deleted := n;
    DELETE FROM controller_events WHERE ts < cutoff;
    GET DIAGNOSTICS n = ROW_COUNT;
    rows_deleted := rows_deleted + n;
END
$$;

-- TimescaleDB (compression, the 15-minute continuous aggregate, their
-- policies) moved to 120_timescaledb.sql: timescaledb_setup(), which also
-- converts a database migrated without the extension. apply_retention() is
-- replaced there too (layout by hypertable, not by extension; one result).
