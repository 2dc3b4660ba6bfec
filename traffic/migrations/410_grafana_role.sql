-- Read-only role for Grafana (dashboards/): SELECT on every table and view,
-- now and in later migrations, nothing else. LOGIN without a password: the
-- operator sets one (ALTER ROLE traffic_grafana PASSWORD ...), which Grafana
-- reads from $TRAFFIC_GRAFANA_DB_PASSWORD. Roles are cluster-wide, so it is
-- created once and granted per database; a migrator without CREATEROLE gets
-- a NOTICE instead of a failed migration (the DBA creates the role then).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'traffic_grafana') THEN
        BEGIN
            CREATE ROLE traffic_grafana LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'cannot create role traffic_grafana (no CREATEROLE): create it, then re-grant';
            RETURN;
        END;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO traffic_grafana', current_database());
    GRANT USAGE ON SCHEMA public TO traffic_grafana;
    GRANT SELECT ON ALL TABLES IN SCHEMA public TO traffic_grafana;
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO traffic_grafana;
    ALTER ROLE traffic_grafana SET default_transaction_read_only = on;
END
$$;
