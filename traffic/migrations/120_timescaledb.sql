-- TimescaleDB layout, and the retention that works on every layout.
--
-- Who creates the extension: not a migration. `traffic migrate --timescaledb`
-- (traffic.db.migrate(dsn, timescaledb=True)) runs CREATE EXTENSION and
-- refuses with a clear error where the server does not have TimescaleDB;
-- a DBA may also create it beforehand. A plain `traffic migrate` never does.
--
-- What decides the layout: whether detector_counts IS a hypertable
-- (timescaledb_information.hypertables), never whether the extension is
-- installed. An extension added after a plain migrate leaves the tables as
-- they were (partitioned or plain) and everything keeps working on them,
-- until `traffic migrate --timescaledb` converts them (timescaledb_setup()).
--
-- Everything TimescaleDB-specific is reached through EXECUTE inside
-- branches that checked the catalog, so this file runs unchanged on plain
-- PostgreSQL (tests run there).

-- True when `rel` is a hypertable. False on plain PostgreSQL (no catalog).
CREATE OR REPLACE FUNCTION traffic_is_hypertable(rel text) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE
    target regclass := to_regclass(rel);
    found  boolean;
BEGIN
    IF target IS NULL OR to_regclass('timescaledb_information.hypertables') IS NULL THEN
        RETURN false;
    END IF;
    EXECUTE 'SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables h'
            ' JOIN pg_namespace n ON n.nspname = h.hypertable_schema'
            ' JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = h.hypertable_name'
            ' WHERE c.oid = $1)' INTO found USING target;
    RETURN found;
END
$$;

-- Schema and name of the materialization hypertable of the continuous
-- aggregate detector_counts_15min_cagg, and its time column; no row when
-- there is no such aggregate (always so on plain PostgreSQL).
CREATE OR REPLACE FUNCTION traffic_rollup_storage(OUT schema_name text, OUT table_name text, OUT time_column text)
RETURNS SETOF record
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF to_regclass('timescaledb_information.continuous_aggregates') IS NULL
       OR to_regclass('detector_counts_15min_cagg') IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY EXECUTE
        'SELECT a.materialization_hypertable_schema::text, a.materialization_hypertable_name::text,'
        '       d.column_name::text'
        '  FROM timescaledb_information.continuous_aggregates a'
        '  JOIN timescaledb_information.dimensions d'
        '    ON d.hypertable_schema = a.materialization_hypertable_schema'
        '   AND d.hypertable_name = a.materialization_hypertable_name AND d.dimension_number = 1'
        ' WHERE a.view_name = ''detector_counts_15min_cagg''';
END
$$;

-- Turn a natively partitioned detector_counts back into one plain table with
-- the same columns, key, BRIN index, data and 15-minute view (a partitioned
-- table cannot become a hypertable). One transaction holding an ACCESS
-- EXCLUSIVE lock for the copy: ingest waits (its spool covers it) for about
-- as long as COPYing the table takes. Returns the rows copied; 0 when the
-- table is not partitioned. Refuses when other views depend on the table.
CREATE OR REPLACE FUNCTION detector_counts_unpartition() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    others text;
    n      bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = 'detector_counts'::regclass) THEN
        RETURN 0;
    END IF;
    SELECT string_agg(DISTINCT r.ev_class::regclass::text, ', ') INTO others
      FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
     WHERE d.refobjid = 'detector_counts'::regclass
       AND r.ev_class <> 'detector_counts'::regclass
       AND r.ev_class <> to_regclass('detector_counts_15min');
    IF others IS NOT NULL THEN
        RAISE EXCEPTION 'detector_counts is used by % : drop those views, convert, then re-create them', others
            USING ERRCODE = '55000';
    END IF;
    LOCK TABLE detector_counts IN ACCESS EXCLUSIVE MODE;
    DROP VIEW IF EXISTS detector_counts_15min;
    IF to_regclass('detector_counts_time_brin') IS NOT NULL THEN
        ALTER INDEX detector_counts_time_brin RENAME TO detector_counts_partitioned_time_brin;
    END IF;
    ALTER TABLE detector_counts RENAME CONSTRAINT detector_counts_pkey TO detector_counts_partitioned_pkey;
    ALTER TABLE detector_counts RENAME TO detector_counts_partitioned;
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
    );
    CREATE INDEX detector_counts_time_brin ON detector_counts USING brin (interval_start);
    INSERT INTO detector_counts (controller_id, detector_id, interval_start, interval_s, vehicle_count,
                                 occupancy_pct, motorcycle_count, received_at)
    SELECT controller_id, detector_id, interval_start, interval_s, vehicle_count,
           occupancy_pct, motorcycle_count, received_at
      FROM detector_counts_partitioned;
    GET DIAGNOSTICS n = ROW_COUNT;
    DROP TABLE detector_counts_partitioned;   -- with its daily partitions and default
    -- Same definition as in 100_sensors.sql.
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
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'traffic_grafana') THEN
        GRANT SELECT ON detector_counts, detector_counts_15min TO traffic_grafana;
    END IF;
    RETURN n;
END
$$;

-- Bring the TimescaleDB layout up to date; idempotent, returns what it did.
-- Needs the extension (raises 55000 otherwise). Steps:
--  1. detector_counts: native partitions merged (above), then hypertable with
--     1-day chunks (migrate_data: existing rows move into chunks);
--     controller_events: hypertable with 1-day chunks.
--  2. Compression after 7 days. Segment by controller_id, detector_id /
--     device_id and order by the rest of each primary key (interval_start;
--     ts, event_code, event_param), so a duplicate check against a
--     compressed chunk (idempotent ingest) looks at one segment's batches.
--  3. detector_counts_15min_cagg: the same columns, types and values as the
--     view detector_counts_15min (time_bucket's default origin and date_bin's
--     2000-01-01 give the same quarter hours), real-time
--     (materialized_only = false: the newest buckets come from the raw rows
--     until materialized), 1-day chunks so apply_retention() cuts it at the
--     same UTC midnight as the raw data. A definition that differs (the old
--     one of 110) is dropped and re-created.
--  4. Refresh policy: every 5 minutes over [now - 7 days, now - 15 minutes].
--     Rows arriving later than 7 days (into compressed chunks) reach the
--     aggregate only through refresh_continuous_aggregate() for their range
--     (sensors.rollups.refresh_rollups); migrate --timescaledb refreshes the
--     whole range once after this function.
-- The aggregate starts WITH NO DATA because a continuous aggregate cannot
-- be filled inside a transaction; until refreshed, real-time aggregation
-- answers from the raw rows, so readers see the same numbers either way.
CREATE OR REPLACE FUNCTION timescaledb_setup() RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE
    done     text[] := '{}';
    n        bigint;
    mat      record;
    cagg_def text;
    view_def text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        RAISE EXCEPTION 'timescaledb_setup: the timescaledb extension is not installed in this database'
            ' (run: traffic migrate --timescaledb)' USING ERRCODE = '55000';
    END IF;

    -- 1. hypertables
    IF EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = 'detector_counts'::regclass) THEN
        n := detector_counts_unpartition();
        done := done || format('detector_counts: daily partitions merged (%s rows)', n);
    END IF;
    IF NOT traffic_is_hypertable('detector_counts') THEN
        EXECUTE 'SELECT create_hypertable(''detector_counts'', ''interval_start'','
                ' chunk_time_interval => INTERVAL ''1 day'', migrate_data => TRUE)';
        done := done || 'detector_counts: hypertable (1-day chunks)'::text;
    END IF;
    IF NOT traffic_is_hypertable('controller_events') THEN
        EXECUTE 'SELECT create_hypertable(''controller_events'', ''ts'','
                ' chunk_time_interval => INTERVAL ''1 day'', migrate_data => TRUE)';
        done := done || 'controller_events: hypertable (1-day chunks)'::text;
    END IF;

    -- 2. compression
    BEGIN
        EXECUTE 'ALTER TABLE detector_counts SET (timescaledb.compress,'
                ' timescaledb.compress_segmentby = ''controller_id, detector_id'','
                ' timescaledb.compress_orderby = ''interval_start'')';
        EXECUTE 'ALTER TABLE controller_events SET (timescaledb.compress,'
                ' timescaledb.compress_segmentby = ''device_id'','
                ' timescaledb.compress_orderby = ''ts, event_code, event_param'')';
    EXCEPTION WHEN OTHERS THEN
        -- Older TimescaleDB refuses new settings while compressed chunks exist.
        done := done || format('compression settings NOT changed: %s (decompress the chunks, re-run)', SQLERRM);
    END;
    EXECUTE 'SELECT add_compression_policy(''detector_counts'', INTERVAL ''7 days'', if_not_exists => TRUE)';
    EXECUTE 'SELECT add_compression_policy(''controller_events'', INTERVAL ''7 days'', if_not_exists => TRUE)';

    -- 3. continuous aggregate, same columns as the view
    IF to_regclass('detector_counts_15min_cagg') IS NOT NULL THEN
        SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum) INTO cagg_def
          FROM pg_attribute WHERE attrelid = 'detector_counts_15min_cagg'::regclass AND attnum > 0 AND NOT attisdropped;
        SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum) INTO view_def
          FROM pg_attribute WHERE attrelid = 'detector_counts_15min'::regclass AND attnum > 0 AND NOT attisdropped;
        IF cagg_def IS DISTINCT FROM view_def THEN
            DROP MATERIALIZED VIEW detector_counts_15min_cagg;
            done := done || format('detector_counts_15min_cagg: dropped (columns %s differ from the view''s)',
                                   cagg_def);
        END IF;
    END IF;
    IF to_regclass('detector_counts_15min_cagg') IS NULL THEN
        EXECUTE 'CREATE MATERIALIZED VIEW detector_counts_15min_cagg'
                ' WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS'
                ' SELECT controller_id, detector_id,'
                ' time_bucket(INTERVAL ''15 minutes'', interval_start) AS bucket,'
                ' sum(vehicle_count)::bigint AS vehicle_count,'
                ' sum(motorcycle_count)::bigint AS motorcycle_count,'
                ' sum(interval_s)::integer AS covered_s,'
                ' count(*)::integer AS intervals,'
                ' (sum(occupancy_pct * interval_s) / nullif(sum(interval_s), 0))::double precision AS occupancy_pct,'
                ' (sum(vehicle_count) * 3600.0 / nullif(sum(interval_s), 0))::double precision AS flow_veh_h'
                ' FROM detector_counts GROUP BY controller_id, detector_id, bucket WITH NO DATA';
        SELECT * INTO mat FROM traffic_rollup_storage();
        EXECUTE 'SELECT set_chunk_time_interval($1, INTERVAL ''1 day'')'
            USING format('%I.%I', mat.schema_name, mat.table_name)::regclass;
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'traffic_grafana') THEN
            GRANT SELECT ON detector_counts_15min_cagg TO traffic_grafana;
        END IF;
        done := done || 'detector_counts_15min_cagg: created (real-time, 1-day chunks, empty until refreshed)'::text;
    END IF;
    EXECUTE 'ALTER MATERIALIZED VIEW detector_counts_15min_cagg SET (timescaledb.materialized_only = false)';

    -- 4. refresh policy (replaced, so its window is always this one)
    EXECUTE 'SELECT remove_continuous_aggregate_policy(''detector_counts_15min_cagg'', if_exists => TRUE)';
    EXECUTE 'SELECT add_continuous_aggregate_policy(''detector_counts_15min_cagg'','
            ' start_offset => INTERVAL ''7 days'', end_offset => INTERVAL ''15 minutes'','
            ' schedule_interval => INTERVAL ''5 minutes'')';
    RETURN done;
END
$$;

-- Forget detector data older than keep_days whole UTC days before `at`, the
-- same way on every layout. Result (one row), same meaning everywhere:
--   layout               'timescaledb' (detector_counts is a hypertable),
--                        'partitioned' or 'plain'
--   cutoff               first instant kept (a UTC midnight)
--   partitions_dropped   whole daily storage units of detector_counts dropped:
--                        daily partitions, or 1-day chunks (controller_events
--                        chunks are dropped too but not counted here)
--   rows_deleted         rows of detector_counts and controller_events before
--                        the cut-off removed, whether in a dropped partition or
--                        chunk or deleted one by one: equal on both layouts for
--                        the same data (they are counted before dropping, so a
--                        run reads the expiring day once)
--   rollup_rows_deleted  materialized rows of detector_counts_15min_cagg
--                        removed (its chunks are dropped at the same cut-off);
--                        0 without the aggregate (the view stores nothing)
-- After the call no row before the cut-off is left in any of them.
DROP FUNCTION IF EXISTS apply_retention(integer, timestamptz);
CREATE FUNCTION apply_retention(keep_days integer, at timestamptz DEFAULT now(),
                                OUT layout text, OUT cutoff timestamptz, OUT partitions_dropped integer,
                                OUT rows_deleted bigint, OUT rollup_rows_deleted bigint)
LANGUAGE plpgsql AS $$
DECLARE
    part   record;
    mat    record;
    n      bigint;
    before bigint;
BEGIN
    IF keep_days IS NULL OR keep_days < 1 THEN
        RAISE EXCEPTION 'apply_retention: keep_days must be >= 1, got %', keep_days USING ERRCODE = '22023';
    END IF;
    cutoff := (((at AT TIME ZONE 'UTC')::date - keep_days)::timestamp) AT TIME ZONE 'UTC';
    partitions_dropped := 0;
    rows_deleted := 0;
    rollup_rows_deleted := 0;

    -- the 15-minute aggregate first (its chunks, counted in its own storage)
    SELECT * INTO mat FROM traffic_rollup_storage();
    IF FOUND THEN
        EXECUTE format('SELECT count(*) FROM %I.%I WHERE %I < $1', mat.schema_name, mat.table_name, mat.time_column)
            INTO before USING cutoff;
        EXECUTE 'SELECT count(*) FROM drop_chunks(''detector_counts_15min_cagg''::regclass, older_than => $1)'
            USING cutoff;
        EXECUTE format('SELECT count(*) FROM %I.%I WHERE %I < $1', mat.schema_name, mat.table_name, mat.time_column)
            INTO n USING cutoff;
        rollup_rows_deleted := before - n;
    END IF;

    -- detector_counts
    IF traffic_is_hypertable('detector_counts') THEN
        layout := 'timescaledb';
        SELECT count(*) INTO n FROM detector_counts WHERE interval_start < cutoff;
        rows_deleted := n;
        EXECUTE 'SELECT count(*) FROM drop_chunks(''detector_counts''::regclass, older_than => $1)'
            INTO partitions_dropped USING cutoff;
        DELETE FROM detector_counts WHERE interval_start < cutoff;   -- a chunk reaching past the cut-off
    ELSE
        layout := CASE WHEN EXISTS (SELECT 1 FROM pg_partitioned_table
                                     WHERE partrelid = 'detector_counts'::regclass)
                       THEN 'partitioned' ELSE 'plain' END;
        FOR part IN
            SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'detector_counts'::regclass AND c.relname ~ '^detector_counts_p[0-9]{8}$'
             ORDER BY c.relname
        LOOP
            IF ((to_date(substring(part.relname FROM 18), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC') <= cutoff THEN
                EXECUTE format('SELECT count(*) FROM %I', part.relname) INTO n;
                EXECUTE format('DROP TABLE %I', part.relname);
                partitions_dropped := partitions_dropped + 1;
                rows_deleted := rows_deleted + n;
            END IF;
        END LOOP;
        DELETE FROM detector_counts WHERE interval_start < cutoff;
        GET DIAGNOSTICS n = ROW_COUNT;
        rows_deleted := rows_deleted + n;
    END IF;

    -- controller_events
    IF traffic_is_hypertable('controller_events') THEN
        SELECT count(*) INTO n FROM controller_events WHERE ts < cutoff;
        rows_deleted := rows_deleted + n;
        EXECUTE 'SELECT count(*) FROM drop_chunks(''controller_events''::regclass, older_than => $1)' USING cutoff;
        DELETE FROM controller_events WHERE ts < cutoff;
    ELSE
        DELETE FROM controller_events WHERE ts < cutoff;
        GET DIAGNOSTICS n = ROW_COUNT;
        rows_deleted := rows_deleted + n;
    END IF;
END
$$;

-- A database whose DBA created the extension before the first migrate gets
-- the whole layout now (100_sensors.sql already made the hypertables).
-- One migrated without it stays as it is: `traffic migrate --timescaledb`.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')
       AND traffic_is_hypertable('detector_counts') THEN
        PERFORM timescaledb_setup();
    END IF;
END
$$;
