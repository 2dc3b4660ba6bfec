-- Engineer locks (controller/): a locked controller is never re-optimised.
-- One row per locked controller; every lock and unlock is also kept in
-- controller_lock_events so the dashboards can say who held it and why.

CREATE TABLE IF NOT EXISTS controller_locks (
    controller_id  text PRIMARY KEY,
    actor          text        NOT NULL,
    reason         text        NOT NULL,
    locked_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS controller_lock_events (
    id             bigserial PRIMARY KEY,
    controller_id  text        NOT NULL,
    at             timestamptz NOT NULL DEFAULT now(),
    action         text        NOT NULL CHECK (action IN ('lock', 'unlock')),
    actor          text        NOT NULL,
    reason         text        NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS controller_lock_events_idx ON controller_lock_events (controller_id, at);
