-- Core schema shared by ingest (sensors/), the central service (controller/)
-- and the dashboards. Runs unchanged on plain PostgreSQL and on TimescaleDB;
-- extension-specific steps live in later migrations that check for it.

CREATE TABLE IF NOT EXISTS controllers (
    controller_id   text PRIMARY KEY,
    site            text NOT NULL,
    tls_id          text,
    spec            jsonb,                 -- traffic.intersection.IntersectionSpec
    state           text NOT NULL DEFAULT 'unknown',   -- online / offline / unknown
    mode            text,                  -- central / tod / flash
    active_plan_id  text,
    active_version  integer,
    last_seen       timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Interval counts per detector. Natural key = (controller, detector, interval start):
-- a redelivered or duplicated report changes nothing.
CREATE TABLE IF NOT EXISTS detector_counts (
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
CREATE INDEX IF NOT EXISTS detector_counts_time_brin ON detector_counts USING brin (interval_start);

-- Indiana hi-resolution controller event log at 0.1 s.
CREATE TABLE IF NOT EXISTS controller_events (
    device_id    text        NOT NULL,
    ts           timestamptz NOT NULL,
    event_code   smallint    NOT NULL,
    event_param  integer     NOT NULL,
    PRIMARY KEY (device_id, ts, event_code, event_param)
);
CREATE INDEX IF NOT EXISTS controller_events_time_brin ON controller_events USING brin (ts);

-- Anything that could not be decoded or validated: kept whole, with the reason.
CREATE TABLE IF NOT EXISTS dead_letters (
    id           bigserial PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now(),
    topic        text        NOT NULL,
    reason       text        NOT NULL,
    payload      bytea       NOT NULL
);

-- Timing plans and their life: proposed -> checked -> simulated -> dispatched -> active
-- (or rejected / rolled_back / superseded). body is traffic.plan.TimingPlan.to_dict().
CREATE TABLE IF NOT EXISTS plans (
    plan_id        text PRIMARY KEY,
    controller_id  text        NOT NULL,
    version        integer     NOT NULL,
    state          text        NOT NULL,
    created_by     text        NOT NULL,
    reason         text        NOT NULL DEFAULT '',
    body           jsonb       NOT NULL,
    safety         jsonb,                  -- violations found (empty list = safe)
    verdict        jsonb,                  -- simulation gate numbers and decision
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (controller_id, version)
);
CREATE INDEX IF NOT EXISTS plans_controller_idx ON plans (controller_id, created_at DESC);

-- Every lifecycle step: who, when, why, and the numbers.
CREATE TABLE IF NOT EXISTS plan_events (
    id             bigserial PRIMARY KEY,
    plan_id        text        NOT NULL,
    controller_id  text        NOT NULL,
    at             timestamptz NOT NULL DEFAULT now(),
    state          text        NOT NULL,
    actor          text        NOT NULL,
    detail         jsonb       NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS plan_events_plan_idx ON plan_events (plan_id, at);
CREATE INDEX IF NOT EXISTS plan_events_time_idx ON plan_events (at);

-- Controller status history (the retained MQTT status is only the latest).
CREATE TABLE IF NOT EXISTS controller_status (
    controller_id  text        NOT NULL,
    at             timestamptz NOT NULL,
    state          text        NOT NULL,
    mode           text,
    plan_id        text,
    plan_version   integer,
    detail         text        NOT NULL DEFAULT '',
    PRIMARY KEY (controller_id, at)
);
