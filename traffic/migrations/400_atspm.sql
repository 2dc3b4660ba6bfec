-- sensors/atspm: ATSPM measures aggregated from controller_events in 15-minute
-- bins (sensors.atspm.store.aggregate fills them incrementally). Plain tables
-- on both back ends: they are small (one row per device, bin and phase) and
-- Grafana reads them directly. Bins are [bin, bin + 15 min) in UTC, aligned
-- to the quarter hour like detector_counts_15min.

-- How each device's detector channels are used (ATSPM "detector config").
-- source 'spec' rows are kept in step with controllers.spec by the
-- aggregator; an agency's own rows (source 'manual') take precedence.
CREATE TABLE IF NOT EXISTS atspm_detectors (
    device_id    text    NOT NULL,
    channel      integer NOT NULL,          -- event_param of detector events (81/82)
    phase        integer NOT NULL,
    function     text    NOT NULL CHECK (function IN ('advance', 'presence', 'yellow_red')),
    detector_id  text    NOT NULL DEFAULT '',
    source       text    NOT NULL DEFAULT 'manual' CHECK (source IN ('spec', 'manual')),
    PRIMARY KEY (device_id, channel, phase, function)
);

-- Phase measures per bin. NULL means "nothing to measure" (no arrivals, no
-- valid cycle ...), never zero.
CREATE TABLE IF NOT EXISTS atspm_phase_15min (
    device_id          text             NOT NULL,
    bin                timestamptz      NOT NULL,
    phase              integer          NOT NULL,
    arrivals           integer          NOT NULL DEFAULT 0,   -- approach volume (advance actuations)
    arrivals_on_green  integer          NOT NULL DEFAULT 0,
    arrivals_on_red    integer          NOT NULL DEFAULT 0,
    total_delay_s      double precision NOT NULL DEFAULT 0,   -- approach delay: sum over arrivals on red
    sf_cycles          integer          NOT NULL DEFAULT 0,   -- cycles judged for split failure
    green_time_s       double precision,                     -- mean over those cycles
    green_occupancy    double precision,                     -- mean, 0..1
    red_occupancy      double precision,                     -- mean, 0..1 (first red_time_s of red)
    split_failures     integer          NOT NULL DEFAULT 0,
    services           integer          NOT NULL DEFAULT 0,   -- greens begun in the bin
    avg_split_s        double precision,                     -- begin green -> end of red clearance
    max_split_s        double precision,
    gap_outs           integer          NOT NULL DEFAULT 0,
    max_outs           integer          NOT NULL DEFAULT 0,
    force_offs         integer          NOT NULL DEFAULT 0,
    yellow_actuations  integer          NOT NULL DEFAULT 0,
    red_actuations     integer          NOT NULL DEFAULT 0,
    ped_services       integer          NOT NULL DEFAULT 0,   -- begin walk
    ped_actuations     integer          NOT NULL DEFAULT 0,   -- ped calls (code 90)
    ped_delay_s        double precision,                     -- mean call -> walk
    ped_delay_samples  integer          NOT NULL DEFAULT 0,
    updated_at         timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, bin, phase)
);
CREATE INDEX IF NOT EXISTS atspm_phase_15min_bin_idx ON atspm_phase_15min (bin);

-- Detector channels per bin: actuations and seconds occupied.
CREATE TABLE IF NOT EXISTS atspm_detector_15min (
    device_id    text             NOT NULL,
    bin          timestamptz      NOT NULL,
    channel      integer          NOT NULL,
    detector_id  text             NOT NULL DEFAULT '',
    actuations   integer          NOT NULL,
    on_time_s    double precision NOT NULL,
    updated_at   timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, bin, channel)
);

-- Communications per bin: events received, every 5-minute sub-bin had data, longest silence.
CREATE TABLE IF NOT EXISTS atspm_device_15min (
    device_id   text             NOT NULL,
    bin         timestamptz      NOT NULL,
    events      integer          NOT NULL,
    has_data    boolean          NOT NULL,
    max_gap_s   double precision NOT NULL,
    updated_at  timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, bin)
);

-- One row per service of a phase: Purdue Coordination Diagram and split monitor.
CREATE TABLE IF NOT EXISTS atspm_cycles (
    device_id          text        NOT NULL,
    phase              integer     NOT NULL,
    green_start        timestamptz NOT NULL,
    yellow_start       timestamptz,
    red_start          timestamptz,
    red_clear_end      timestamptz,
    next_green         timestamptz,
    termination        text CHECK (termination IN ('gap_out', 'max_out', 'force_off')),
    arrivals           integer     NOT NULL DEFAULT 0,
    arrivals_on_green  integer     NOT NULL DEFAULT 0,
    PRIMARY KEY (device_id, phase, green_start)
);
CREATE INDEX IF NOT EXISTS atspm_cycles_time_idx ON atspm_cycles (green_start);

-- Incremental aggregation: bins before processed_until are final for the device.
CREATE TABLE IF NOT EXISTS atspm_progress (
    device_id        text PRIMARY KEY,
    processed_until  timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
