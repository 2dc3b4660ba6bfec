-- sensors/: detector health, 15-minute rollups, and TimescaleDB when present.
-- Runs unchanged on plain PostgreSQL (15+) and on TimescaleDB.

-- Current health of each detector (sensors.health.store_health keeps it up to date).
CREATE TABLE IF NOT EXISTS detector_health (
    controller_id  text        NOT NULL,
    detector_id    text        NOT NULL,
    state          text        NOT NULL
        CHECK (state IN ('ok', 'stuck_on', 'stuck_off', 'chattering', 'missing')),
    since          timestamptz,            -- when the current state began (as far as the window shows)
    updated_at     timestamptz NOT NULL DEFAULT now(),
    detail         text        NOT NULL DEFAULT '',
    PRIMARY KEY (controller_id, detector_id)
);
CREATE INDEX IF NOT EXISTS detector_health_state_idx ON detector_health (state) WHERE state <> 'ok';

-- 15-minute counts per detector for dashboards and demand estimation.
-- date_bin() works on plain PostgreSQL; origin is a fixed UTC midnight so
-- buckets are aligned to the quarter hour. flow_veh_h scales by the seconds
-- actually covered, so a bucket with a missing interval is not under-read.
CREATE OR REPLACE VIEW detector_counts_15min AS
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

-- TimescaleDB only: turn the time-series tables into hypertables. The
-- primary keys already include the time column, as hypertables require.
-- On plain PostgreSQL the branch is never executed (PL/pgSQL resolves the
-- function only when it runs), so this block is a no-op there.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        PERFORM create_hypertable('detector_counts', 'interval_start',
                                  chunk_time_interval => INTERVAL '1 day',
                                  if_not_exists => TRUE, migrate_data => TRUE);
        PERFORM create_hypertable('controller_events', 'ts',
                                  chunk_time_interval => INTERVAL '1 day',
                                  if_not_exists => TRUE, migrate_data => TRUE);
    END IF;
END
$$;
