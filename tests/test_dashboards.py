"""Dashboards: valid Grafana JSON, and every panel's SQL run against real PostgreSQL.

The expected rows are computed in Python from the same fixture rows that are
inserted, so a wrong filter, bucket or join in a panel's SQL shows up as a
difference in content, not just as an error.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import psycopg
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from dashboards import build
from dashboards.macros import expand, quote_values, timestamptz_literal
from dashboards.queries import COUNT_BUCKET, QUERIES
from traffic.config import Settings
from traffic.errors import ConfigError

UTC = UTC
T0 = datetime(2024, 5, 6, 8, 0, tzinfo=UTC)  # range start
T1 = T0 + timedelta(hours=1)  # range end
SELECTED = ["c1", "c2"]  # $controller; "c3" exists but is not selected
BUCKET = timedelta(minutes=5)
assert COUNT_BUCKET == "5 minutes"  # the Python model below follows the SQL's bucket

CONTROLLERS = [
    # id, state, mode, active plan, active version, last seen
    ("c1", "online", "central", "p-c1-3", 3, T1 - timedelta(seconds=20)),
    ("c2", "offline", "tod", None, None, T1 - timedelta(minutes=30)),
    ("c3", "online", "central", "p-c3-1", 1, T1 - timedelta(seconds=5)),
]
COUNTS = [
    # controller, detector, interval start, vehicles
    ("c1", "d1", T0 + timedelta(minutes=0), 10),
    ("c1", "d1", T0 + timedelta(minutes=1), 12),
    ("c1", "d1", T0 + timedelta(minutes=4), 14),
    ("c1", "d1", T0 + timedelta(minutes=5), 7),
    ("c1", "d2", T0 + timedelta(minutes=2), 5),
    ("c2", "d1", T0 + timedelta(minutes=17), 9),
    ("c3", "d1", T0 + timedelta(minutes=1), 100),  # not selected
    ("c1", "d1", T0 - timedelta(minutes=10), 50),  # before the range
    ("c1", "d1", T1 + timedelta(minutes=10), 60),  # after the range
]
PLANS = [
    # plan id, controller, version, cycle, reason
    ("p-c1-2", "c1", 2, 90.0, "morning peak"),
    ("p-c1-3", "c1", 3, 104.5, "demand up on main street"),
    ("p-c3-1", "c3", 1, 60.0, "initial"),
]
PLAN_EVENTS = [
    # plan id, controller, at, state, actor
    ("p-c1-2", "c1", T0 + timedelta(minutes=3), "proposed", "optimizer"),
    ("p-c1-2", "c1", T0 + timedelta(minutes=4), "rejected", "safety"),
    ("p-c1-3", "c1", T0 + timedelta(minutes=20), "proposed", "engineer:lan"),
    ("p-c1-3", "c1", T0 + timedelta(minutes=22), "active", "field"),
    ("p-c3-1", "c3", T0 + timedelta(minutes=5), "active", "field"),  # not selected
    ("p-c1-3", "c1", T0 - timedelta(hours=2), "proposed", "optimizer"),  # before the range
]
DEAD_LETTER_TIMES = [
    T1 - timedelta(minutes=1),
    T1 - timedelta(minutes=30),
    T1 - timedelta(minutes=59),
    T1 - timedelta(minutes=61),  # older than an hour before the range end
    T1 + timedelta(minutes=1),  # after the range end
]


def _plan_body(controller: str, cycle: float) -> dict:
    return {"controller_id": controller, "patternCycleTime": cycle, "phases": []}


@pytest.fixture
def filled_dsn(pg_dsn):
    with psycopg.connect(pg_dsn) as conn:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO controllers (controller_id, site, state, mode, active_plan_id, active_version, last_seen)"
                " VALUES (%s, 'test', %s, %s, %s, %s, %s)",
                CONTROLLERS,
            )
            cur.executemany(
                "INSERT INTO detector_counts (controller_id, detector_id, interval_start, interval_s,"
                " vehicle_count, occupancy_pct) VALUES (%s, %s, %s, 60, %s, 10.0)",
                COUNTS,
            )
            cur.executemany(
                "INSERT INTO plans (plan_id, controller_id, version, state, created_by, reason, body)"
                " VALUES (%s, %s, %s, 'proposed', 'test', %s, %s)",
                [(p, c, v, r, Jsonb(_plan_body(c, cy))) for p, c, v, cy, r in PLANS],
            )
            cur.executemany(
                "INSERT INTO plan_events (plan_id, controller_id, at, state, actor) VALUES (%s, %s, %s, %s, %s)",
                PLAN_EVENTS,
            )
            cur.executemany(
                "INSERT INTO dead_letters (received_at, topic, reason, payload)"
                " VALUES (%s, 'tsc/v1/x/y/counts', 'bad json', %s)",
                [(t, b"{") for t in DEAD_LETTER_TIMES],
            )
    return pg_dsn


def _run(dsn: str, name: str, variables=None) -> list[tuple]:
    text = expand(QUERIES[name], T0, T1, {"controller": SELECTED} if variables is None else variables)
    with psycopg.connect(dsn) as conn:
        return conn.execute(text).fetchall()  # type: ignore[arg-type]  # expanded from trusted templates


def _bucket(ts: datetime) -> datetime:
    epoch = datetime(2000, 1, 1, tzinfo=UTC)
    return epoch + ((ts - epoch) // BUCKET) * BUCKET


# -- the dashboard JSON ------------------------------------------------------


def _all_targets(board: dict) -> list[dict]:
    return [t for p in board["panels"] for t in p["targets"]]


def test_dashboard_json_is_valid_and_every_panel_queries_postgres():
    board = build.corridor_overview()
    json.dumps(board)  # serialisable
    assert board["uid"] == build.CORRIDOR_UID and board["title"]
    panels = board["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)) >= 4
    assert {p["type"] for p in panels} >= {"timeseries", "table", "stat"}
    for panel in panels:
        assert panel["datasource"] == {"type": build.DATASOURCE_TYPE, "uid": build.DATASOURCE_UID}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["type"] == build.DATASOURCE_TYPE
            assert target["rawSql"] in QUERIES.values()
            assert target["format"] in {"table", "time_series"}
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24 and pos["h"] > 0
    # no two panels overlap on the grid
    cells = set()
    for panel in panels:
        pos = panel["gridPos"]
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & mine, panel["title"]
        cells |= mine
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["controller"]["multi"] and variables["controller"]["includeAll"]
    assert variables["controller"]["query"] == QUERIES["controller_variable"]
    # every query in the one SQL registry is used by some dashboard
    from dashboards.boards import BOARDS
    used = {t["rawSql"] for t in _all_targets(board)} | {variables["controller"]["query"]}
    for make in BOARDS.values():
        other = make()
        used |= {t["rawSql"] for t in _all_targets(other)}
        used |= {v["query"] for v in other.get("templating", {}).get("list", [])}
        used |= {a["target"]["rawSql"] for a in other.get("annotations", {}).get("list", [])
                 if "rawSql" in a.get("target", {})}
    assert used == set(QUERIES.values())


def test_time_series_panel_returns_time_series_format():
    board = build.corridor_overview()
    series = [p for p in board["panels"] if p["type"] == "timeseries"]
    assert series and all(t["format"] == "time_series" for p in series for t in p["targets"])
    assert all(t["rawSql"] == QUERIES["detector_counts"] for p in series for t in p["targets"])


def test_write_provisioning_files(tmp_path):
    files = build.write_provisioning(tmp_path, host="db.local", port=6543, database="tsc", user="grafana")
    board_path, ds_path, prov_path, env_path = files[:4]
    assert json.loads(board_path.read_text()) == build.corridor_overview()
    assert {p.name for p in files[4:]} == {"atspm-intersection.json", "corridor.json", "operations.json"}
    ds = yaml.safe_load(ds_path.read_text())
    assert ds["apiVersion"] == 1
    (source,) = ds["datasources"]
    assert source["type"] == "grafana-postgresql-datasource" and source["uid"] == build.DATASOURCE_UID
    # portable: addresses and paths come from Grafana's environment, values in grafana.env
    assert source["url"] == "${TRAFFIC_GRAFANA_DB_HOST}:${TRAFFIC_GRAFANA_DB_PORT}"
    assert source["user"] == "${TRAFFIC_GRAFANA_DB_USER}"
    assert source["jsonData"]["database"] == "${TRAFFIC_GRAFANA_DB_NAME}"
    assert "$__env{" in source["secureJsonData"]["password"]  # never a literal secret
    env = dict(line.split("=", 1) for line in env_path.read_text().splitlines() if line and not line.startswith("#"))
    assert env["TRAFFIC_GRAFANA_DB_HOST"] == "db.local" and env["TRAFFIC_GRAFANA_DB_PORT"] == "6543"
    assert env["TRAFFIC_GRAFANA_DB_NAME"] == "tsc" and env["TRAFFIC_GRAFANA_DB_USER"] == "grafana"
    prov = yaml.safe_load(prov_path.read_text())
    assert prov["apiVersion"] == 1
    (provider,) = prov["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "${TRAFFIC_GRAFANA_DASHBOARDS_DIR}"
    for path in (ds_path, prov_path, env_path):
        assert str(tmp_path) not in path.read_text()      # no absolute build path anywhere


def test_build_all_takes_the_database_from_settings(tmp_path):
    settings = replace(Settings(), database=replace(Settings().database, dsn="postgresql://svc@10.0.0.7:5433/corridor"))
    files = build.build_all(tmp_path, settings)
    env = dict(line.split("=", 1) for line in files[3].read_text().splitlines() if line and not line.startswith("#"))
    assert (env["TRAFFIC_GRAFANA_DB_HOST"], env["TRAFFIC_GRAFANA_DB_PORT"], env["TRAFFIC_GRAFANA_DB_NAME"]) == (
        "10.0.0.7", "5433", "corridor")
    assert env["TRAFFIC_GRAFANA_DB_USER"] == build.READ_ONLY_ROLE      # not the service's own user


def test_dsn_parts_rejects_garbage_and_unix_sockets():
    with pytest.raises(ConfigError):
        build.dsn_parts("host='unterminated")
    with pytest.raises(ConfigError, match="unix socket"):
        build.dsn_parts("host=/var/run/postgresql dbname=x")
    assert build.dsn_parts("host=h port=1 dbname=d user=u")["port"] == 1


# -- macro expansion -----------------------------------------------------------


def test_expand_time_macros_and_variables():
    text = "SELECT 1 WHERE $__timeFilter(e.at) AND x > $__timeFrom() AND y < $__timeTo() AND c IN ($controller)"
    out = expand(text, T0, T1, {"controller": ["a", "b"]})
    start, end = timestamptz_literal(T0), timestamptz_literal(T1)
    assert out == f"SELECT 1 WHERE e.at BETWEEN {start} AND {end} AND x > {start} AND y < {end} AND c IN ('a', 'b')"
    assert start == "'2024-05-06T08:00:00+00:00'::timestamptz"


def test_expand_normalises_other_time_zones_to_utc():
    plus7 = timezone(timedelta(hours=7))
    assert timestamptz_literal(T0.astimezone(plus7)) == timestamptz_literal(T0)


@pytest.mark.parametrize(
    "text, variables, message",
    [
        ("SELECT $__timeGroup(at, '1m')", {}, "unsupported Grafana macro"),
        ("SELECT 1 WHERE c IN ($controller)", {}, "no value"),
        ("SELECT 1 WHERE c IN (${site})", {"controller": ["a"]}, "no value"),
        ("SELECT 1 WHERE c IN ($controller)", {"controller": []}, "at least one value"),
    ],
)
def test_expand_refuses_what_it_cannot_render(text, variables, message):
    with pytest.raises(ConfigError, match=message):
        expand(text, T0, T1, variables)


def test_expand_refuses_naive_or_reversed_time_ranges():
    with pytest.raises(ConfigError, match="time zone"):
        expand("SELECT $__timeFrom()", T0.replace(tzinfo=None), T1)
    with pytest.raises(ConfigError, match="before it starts"):
        expand("SELECT $__timeFrom()", T1, T0)


@pytest.mark.parametrize("bad", ["a\x00b", "\ud800"])
def test_quote_values_refuses_nul_and_lone_surrogates(bad):
    with pytest.raises(ConfigError):
        quote_values(["ok", bad])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
                               max_size=20), min_size=1, max_size=5))
def test_quoted_values_reach_postgres_unchanged(pg_dsn, values):
    """Whatever the variable values (quotes, backslashes, SQL), they arrive as data, never as SQL."""
    with psycopg.connect(pg_dsn) as conn:
        rendered = f"SELECT ARRAY[{quote_values(values)}]::text[]"
        assert conn.execute(rendered).fetchone()[0] == values  # type: ignore[arg-type]


# -- every panel's SQL against the real database -------------------------------


def test_detector_counts_panel_sums_counts_per_bucket(filled_dsn):
    expected: dict[tuple[datetime, str], int] = defaultdict(int)
    for controller, detector, start, vehicles in COUNTS:
        if controller in SELECTED and T0 <= start <= T1:
            expected[(_bucket(start), f"{controller}/{detector}")] += vehicles
    rows = _run(filled_dsn, "detector_counts")
    assert [(t, m, v) for t, m, v in rows] == [(t, m, v) for (t, m), v in sorted(expected.items())]
    assert (T0, "c1/d1", 36) in rows  # 10 + 12 + 14 in the 08:00 bucket


def test_plan_changes_panel_lists_events_with_version_and_cycle(filled_dsn):
    plans = {p: (v, cy, r) for p, _c, v, cy, r in PLANS}
    expected = [
        (at, c, state, actor, plans[p][0], plans[p][1], plans[p][2])
        for p, c, at, state, actor in PLAN_EVENTS
        if c in SELECTED and T0 <= at <= T1
    ]
    expected.sort(key=lambda row: row[0], reverse=True)
    assert _run(filled_dsn, "plan_changes") == expected


def test_controller_status_panel(filled_dsn):
    expected = [
        (c, state, mode, plan, version, seen, (T1 - seen).total_seconds())
        for c, state, mode, plan, version, seen in CONTROLLERS
        if c in SELECTED
    ]
    assert _run(filled_dsn, "controller_status") == expected


def test_controllers_online_panel(filled_dsn):
    chosen = [row for row in CONTROLLERS if row[0] in SELECTED]
    online = sum(1 for row in chosen if row[1] == "online")
    assert _run(filled_dsn, "controllers_online") == [(online, len(chosen))]
    everyone = [row[0] for row in CONTROLLERS]  # what Grafana sends for "All"
    assert _run(filled_dsn, "controllers_online", {"controller": everyone}) == [
        (sum(1 for row in CONTROLLERS if row[1] == "online"), len(CONTROLLERS))
    ]


def test_dead_letters_panel_counts_the_hour_before_range_end(filled_dsn):
    expected = sum(1 for t in DEAD_LETTER_TIMES if T1 - timedelta(hours=1) < t <= T1)
    assert _run(filled_dsn, "dead_letters_last_hour") == [(expected,)]


def test_controller_variable_lists_every_controller(filled_dsn):
    rows = _run(filled_dsn, "controller_variable", {})
    assert rows == sorted((c[0], c[0]) for c in CONTROLLERS)


def test_every_query_runs_on_an_empty_database(pg_dsn):
    """Fresh installs: no panel may error before the first data arrives."""
    with psycopg.connect(pg_dsn) as conn:
        for text in QUERIES.values():
            conn.execute(expand(text, T0, T1, {"controller": ["none"], "device": ["none"]})).fetchall()  # type: ignore[arg-type]
