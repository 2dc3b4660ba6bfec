"""Build the Grafana dashboards and provisioning files from code.

Why code: dashboards drift when edited by hand; building them with Grafana's
own typed builders (grafana-foundation-sdk) keeps the JSON valid for the
Grafana schema, and taking every panel's SQL from :mod:`dashboards.queries`
means the tests run exactly what Grafana runs.

The SDK has no PostgreSQL query type, so :class:`SqlQuery` supplies one
(the fields Grafana's ``grafana-postgresql-datasource`` stores: ``refId``,
``rawSql``, ``format``, ``rawQuery``, ``editorMode``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import stat as stat_b
from grafana_foundation_sdk.builders import table as table_b
from grafana_foundation_sdk.builders import timeseries as ts_b
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dash_m
from psycopg.conninfo import conninfo_to_dict

from dashboards.queries import QUERIES
from traffic.config import Settings
from traffic.errors import ConfigError

log = logging.getLogger(__name__)

DATASOURCE_TYPE = "grafana-postgresql-datasource"
DATASOURCE_UID = "traffic-pg"
DATASOURCE_NAME = "Traffic PostgreSQL"
CORRIDOR_UID = "traffic-corridor-overview"
CORRIDOR_FILE = "corridor-overview.json"
PASSWORD_ENV = "TRAFFIC_GRAFANA_DB_PASSWORD"  # provisioning refers to it; no secret is written to disk

SqlFormat = Literal["time_series", "table"]


def datasource_ref() -> dash_m.DataSourceRef:
    """The one data source every panel uses (provisioned with a fixed uid)."""
    return dash_m.DataSourceRef(type_val=DATASOURCE_TYPE, uid=DATASOURCE_UID)


class SqlDataquery(cogvariants.Dataquery):
    """A ``grafana-postgresql-datasource`` target in raw-SQL ("code") mode."""

    def __init__(self, ref_id: str, raw_sql: str, fmt: SqlFormat) -> None:
        self.ref_id = ref_id
        self.raw_sql = raw_sql
        self.format = fmt

    def to_json(self) -> dict[str, object]:
        return {
            "refId": self.ref_id,
            "datasource": datasource_ref(),
            "editorMode": "code",
            "rawQuery": True,
            "format": self.format,
            "rawSql": self.raw_sql,
        }


class SqlQuery(cogbuilder.Builder[cogvariants.Dataquery]):
    """Builder for :class:`SqlDataquery`, taking the SQL by name from :data:`QUERIES`."""

    def __init__(self, query_name: str, *, fmt: SqlFormat = "table", ref_id: str = "A") -> None:
        if query_name not in QUERIES:
            raise ConfigError(f"no dashboard query named {query_name!r}")
        self._query = SqlDataquery(ref_id, QUERIES[query_name], fmt)

    def build(self) -> SqlDataquery:
        return self._query


def _controller_variable() -> dash_b.QueryVariable:
    return (
        dash_b.QueryVariable("controller")
        .label("Controller")
        .datasource(datasource_ref())
        .query(QUERIES["controller_variable"])
        .refresh(dash_m.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(dash_m.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
    )


def corridor_overview() -> dict[str, Any]:
    """The corridor overview dashboard as Grafana JSON (a plain dict)."""
    counts = (
        ts_b.Panel()
        .id(1)
        .title("Vehicles per detector (5-minute buckets)")
        .description("Sum of interval counts per detector from detector_counts.")
        .datasource(datasource_ref())
        .with_target(SqlQuery("detector_counts", fmt="time_series"))
        .unit("short")
        .min(0)
        .height(9)
        .span(24)
    )
    plan_changes = (
        table_b.Panel()
        .id(2)
        .title("Plan changes")
        .description("Every plan lifecycle step: who, when, version and cycle (plan_events joined to plans).")
        .datasource(datasource_ref())
        .with_target(SqlQuery("plan_changes"))
        .height(10)
        .span(14)
    )
    status = (
        table_b.Panel()
        .id(3)
        .title("Controller status")
        .description("Latest state, mode and active plan version per controller.")
        .datasource(datasource_ref())
        .with_target(SqlQuery("controller_status"))
        .height(10)
        .span(10)
    )
    online = (
        stat_b.Panel()
        .id(4)
        .title("Controllers online")
        .datasource(datasource_ref())
        .with_target(SqlQuery("controllers_online"))
        .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]).fields("/^online$/"))
        .height(5)
        .span(12)
    )
    dead = (
        stat_b.Panel()
        .id(5)
        .title("Dead letters (last hour)")
        .description("Messages that could not be decoded or validated, in the hour before the range end.")
        .datasource(datasource_ref())
        .with_target(SqlQuery("dead_letters_last_hour"))
        .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]))
        .thresholds(
            dash_b.ThresholdsConfig()
            .mode(dash_m.ThresholdsMode.ABSOLUTE)
            .steps([dash_m.Threshold(value=None, color="green"), dash_m.Threshold(value=1, color="red")])
        )
        .height(5)
        .span(12)
    )
    board = (
        dash_b.Dashboard("Corridor overview")
        .uid(CORRIDOR_UID)
        .tags(["traffic", "corridor"])
        .description("Detector counts, plan changes, controller status and dead letters.")
        .time("now-6h", "now")
        .refresh("30s")
        .timezone("browser")
        .editable()
        .with_variable(_controller_variable())
        .with_panel(online)
        .with_panel(dead)
        .with_panel(counts)
        .with_panel(plan_changes)
        .with_panel(status)
    )
    return json.loads(json.dumps(board.build(), cls=JSONEncoder))


def dsn_parts(dsn: str) -> dict[str, Any]:
    """Split a libpq DSN/URL into what the Grafana data source needs (host, port, database, user)."""
    try:
        info = conninfo_to_dict(dsn)
    except Exception as exc:  # psycopg.ProgrammingError; keep the cause
        raise ConfigError(f"cannot parse database DSN: {exc}") from exc
    host = str(info.get("host") or "127.0.0.1")
    if host.startswith("/"):
        raise ConfigError("Grafana needs a TCP host for PostgreSQL, not a unix socket folder")
    return {
        "host": host,
        "port": int(info.get("port") or 5432),
        "database": str(info.get("dbname") or "traffic"),
        "user": str(info.get("user") or "postgres"),
        "sslmode": str(info.get("sslmode") or "disable"),
    }


def _write_yaml(path: Path, data: Mapping[str, Any]) -> None:
    path.write_text(yaml.safe_dump(dict(data), sort_keys=False, default_flow_style=False))


ENV_HOST = "TRAFFIC_GRAFANA_DB_HOST"
ENV_PORT = "TRAFFIC_GRAFANA_DB_PORT"
ENV_NAME = "TRAFFIC_GRAFANA_DB_NAME"
ENV_USER = "TRAFFIC_GRAFANA_DB_USER"
ENV_SSLMODE = "TRAFFIC_GRAFANA_DB_SSLMODE"
ENV_DASHBOARDS = "TRAFFIC_GRAFANA_DASHBOARDS_DIR"
READ_ONLY_ROLE = "traffic_grafana"   # created by migration 410_grafana_role.sql
ENV_FILE = "grafana.env"


def write_provisioning(
    out_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 5432,
    database: str = "traffic",
    user: str = READ_ONLY_ROLE,
    sslmode: str = "disable",
    timescaledb: bool = False,
) -> list[Path]:
    """Write dashboard JSON plus Grafana provisioning YAML under ``out_dir``; return the files.

    Layout: ``dashboards/*.json``, ``provisioning/datasources/traffic.yaml``,
    ``provisioning/dashboards/traffic.yaml`` and ``grafana.env``. The YAML is
    portable: no path or address is written into it; Grafana expands
    ``$TRAFFIC_GRAFANA_*`` from its environment when it reads the files
    (data source host, port, database, user, sslmode, the dashboards folder).
    ``grafana.env`` holds the values for this configuration (never the
    password: ``$TRAFFIC_GRAFANA_DB_PASSWORD``, for the read-only role
    ``traffic_grafana`` of migration 410) except the folder, which is where
    the JSON is deployed. Point ``paths.provisioning`` at
    ``out_dir/provisioning``.
    """
    from dashboards.boards import BOARDS, FILES  # boards builds on this module

    out_dir = Path(out_dir)
    json_dir = out_dir / "dashboards"
    ds_dir = out_dir / "provisioning" / "datasources"
    prov_dir = out_dir / "provisioning" / "dashboards"
    try:
        for folder in (json_dir, ds_dir, prov_dir):
            folder.mkdir(parents=True, exist_ok=True)
        board_path = json_dir / CORRIDOR_FILE
        board_path.write_text(json.dumps(corridor_overview(), indent=2, sort_keys=True) + "\n")
        boards = [board_path]
        for uid, make in BOARDS.items():
            path = json_dir / FILES[uid]
            path.write_text(json.dumps(make(), indent=2, sort_keys=True) + "\n")
            boards.append(path)
        datasources = {
            "apiVersion": 1,
            "datasources": [
                {
                    "name": DATASOURCE_NAME,
                    "type": DATASOURCE_TYPE,
                    "uid": DATASOURCE_UID,
                    "access": "proxy",
                    "url": f"${{{ENV_HOST}}}:${{{ENV_PORT}}}",
                    "user": f"${{{ENV_USER}}}",
                    "isDefault": True,
                    "editable": False,
                    "jsonData": {
                        "database": f"${{{ENV_NAME}}}",
                        "sslmode": f"${{{ENV_SSLMODE}}}",
                        "postgresVersion": 1500,
                        "timescaledb": bool(timescaledb),
                        "timeInterval": "1m",
                    },
                    "secureJsonData": {"password": f"$__env{{{PASSWORD_ENV}}}"},
                }
            ],
        }
        providers = {
            "apiVersion": 1,
            "providers": [
                {
                    "name": "traffic",
                    "folder": "Traffic",
                    "type": "file",
                    "disableDeletion": False,
                    "allowUiUpdates": False,
                    "updateIntervalSeconds": 30,
                    "options": {"path": f"${{{ENV_DASHBOARDS}}}", "foldersFromFilesStructure": False},
                }
            ],
        }
        ds_path = ds_dir / "traffic.yaml"
        _write_yaml(ds_path, datasources)
        prov_path = prov_dir / "traffic.yaml"
        _write_yaml(prov_path, providers)
        env_path = out_dir / ENV_FILE
        env_path.write_text(
            "# Environment for Grafana (systemd EnvironmentFile=, docker --env-file); no secret here.\n"
            f"{ENV_HOST}={host}\n{ENV_PORT}={int(port)}\n{ENV_NAME}={database}\n{ENV_USER}={user}\n"
            f"{ENV_SSLMODE}={sslmode}\n"
            f"# absolute folder where dashboards/*.json are deployed, e.g. /var/lib/grafana/dashboards/traffic\n"
            f"{ENV_DASHBOARDS}=\n"
            f"# {PASSWORD_ENV}=...   (set in the service environment, never in a file in the repository)\n")
    except OSError as exc:
        raise ConfigError(f"cannot write dashboards to {out_dir}: {exc}") from exc
    log.info("wrote Grafana dashboards and provisioning under %s", out_dir)
    return [board_path, ds_path, prov_path, env_path, *boards[1:]]


def build_all(out_dir: Path, settings: Settings) -> list[Path]:
    """``traffic dashboards build --out DIR``: dashboards + provisioning for the configured database."""
    parts = dsn_parts(settings.database.dsn) if settings.database.dsn else {}
    parts.pop("user", None)   # Grafana reads as the read-only role, not as the service's own user
    if not parts:
        log.warning("no database DSN configured; provisioning points at 127.0.0.1:5432/traffic")
    return write_provisioning(Path(out_dir), **parts)


def push(url: str, token: str | None = None, *, folder_uid: str | None = None) -> None:
    """Upload the data source, folder and every dashboard to a live Grafana (see :mod:`dashboards.push`)."""
    from dashboards import push as push_module

    push_module.push(url, token=token, folder_uid=folder_uid or push_module.FOLDER_UID)
