"""``traffic dashboards push --url URL``: the data source, the folder and every dashboard to a running Grafana.

Through grafana-client (Grafana's HTTP API), in this order, each step
idempotent so a push can be repeated:

1. data source ``traffic-pg``: ``GET /api/datasources/uid/traffic-pg``; 404 →
   ``POST /api/datasources``, found → ``PUT /api/datasources/uid/traffic-pg``.
   Same fields as the provisioning file (:func:`dashboards.build.write_provisioning`):
   PostgreSQL as the read-only role ``traffic_grafana``; the password is taken
   from ``$TRAFFIC_GRAFANA_DB_PASSWORD`` when set (never from the command
   line), otherwise not sent, and Grafana keeps the one it has.
2. folder ``traffic`` ("Traffic"): ``GET /api/folders/traffic``; 404 → ``POST /api/folders``.
3. each dashboard (the corridor overview and :data:`dashboards.boards.BOARDS`):
   ``POST /api/dashboards/db`` with ``folderUid`` and ``overwrite: true``
   (the code is the source of truth: a hand edit in Grafana is replaced).

Credentials: a service-account token from ``$TRAFFIC_GRAFANA_TOKEN`` (or
the variable ``--token-env`` names), else user and password in the URL
(``http://admin:secret@grafana:3000``). Failures become one
:class:`GrafanaError` subclass each: :class:`GrafanaAuthError` (401, 403),
:class:`GrafanaConflictError` (409, 412: version mismatch, a dashboard of
the same name elsewhere), :class:`GrafanaServerError` (5xx),
:class:`GrafanaUnreachableError` (connection refused, timeout), and
:class:`GrafanaError` itself for any other refusal.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dashboards.build import (
    CORRIDOR_UID,
    DATASOURCE_NAME,
    DATASOURCE_TYPE,
    DATASOURCE_UID,
    PASSWORD_ENV,
    READ_ONLY_ROLE,
    corridor_overview,
    dsn_parts,
)
from traffic.errors import ConfigError, TrafficError

log = logging.getLogger(__name__)

FOLDER_UID = "traffic"
FOLDER_TITLE = "Traffic"
TOKEN_ENV = "TRAFFIC_GRAFANA_TOKEN"
PUSH_MESSAGE = "traffic dashboards push"


class GrafanaError(TrafficError):
    """Grafana refused or failed a push step; ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, *, status: int = 0, step: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.step = step

    def _init_args(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (str(self),), {"status": self.status, "step": self.step}


class GrafanaAuthError(GrafanaError):
    """401 or 403: the token or user is wrong, or lacks the role (Editor for dashboards, Admin for data sources)."""


class GrafanaConflictError(GrafanaError):
    """409 or 412: version mismatch, or a dashboard or data source of the same name exists with another uid."""


class GrafanaServerError(GrafanaError):
    """5xx from Grafana."""


class GrafanaUnreachableError(GrafanaError):
    """No HTTP answer: connection refused, name not resolved, timeout."""


@dataclass
class PushResult:
    """What a push did: ``created``/``updated`` for the data source and folder, dashboard uid -> version."""

    datasource: str = ""
    folder: str = ""
    dashboards: dict[str, int] = field(default_factory=dict)


def all_dashboards() -> list[dict[str, Any]]:
    """Every dashboard the build writes (the same JSON as ``traffic dashboards build``)."""
    from dashboards.boards import BOARDS

    return [corridor_overview(), *(make() for make in BOARDS.values())]


def datasource_body(dsn: str | None, *, password: str | None = None, timescaledb: bool = False) -> dict[str, Any]:
    """The ``grafana-postgresql-datasource`` JSON for the API (values, where provisioning has ``$VARS``)."""
    parts = dsn_parts(dsn) if dsn else {"host": "127.0.0.1", "port": 5432, "database": "traffic",
                                        "sslmode": "disable"}
    body: dict[str, Any] = {
        "name": DATASOURCE_NAME,
        "type": DATASOURCE_TYPE,
        "uid": DATASOURCE_UID,
        "access": "proxy",
        "url": f"{parts['host']}:{parts['port']}",
        "user": READ_ONLY_ROLE,
        "isDefault": True,
        "jsonData": {
            "database": parts["database"],
            "sslmode": parts["sslmode"],
            "postgresVersion": 1500,
            "timescaledb": bool(timescaledb),
            "timeInterval": "1m",
        },
    }
    if password:
        body["secureJsonData"] = {"password": password}
    return body


def _grafana_message(response: Any, fallback: str) -> str:
    if isinstance(response, dict):
        text = response.get("message") or fallback
        if response.get("status"):
            text = f"{text} ({response['status']})"
        return str(text)
    return str(response or fallback)


def _call(step: str, url: str, fn: Callable[[], Any]) -> Any:
    """Run one API call; map grafana-client's and the HTTP library's failures to one GrafanaError subclass."""
    from grafana_client.client import GrafanaException, GrafanaTimeoutError

    try:
        return fn()
    except GrafanaTimeoutError as exc:
        raise GrafanaUnreachableError(f"Grafana at {url} did not answer ({step}): {exc}", step=step) from exc
    except GrafanaException as exc:
        status = int(getattr(exc, "status_code", 0) or 0)
        text = _grafana_message(exc.response, exc.message)
        if status in (401, 403):
            raise GrafanaAuthError(f"Grafana at {url} refused the credentials ({step}): HTTP {status} {text}; "
                                   f"set ${TOKEN_ENV} to a service-account token with the Admin role",
                                   status=status, step=step) from exc
        if status in (409, 412):
            raise GrafanaConflictError(f"Grafana at {url} reported a conflict ({step}): HTTP {status} {text}",
                                       status=status, step=step) from exc
        if status >= 500:
            raise GrafanaServerError(f"Grafana at {url} failed ({step}): HTTP {status} {text}",
                                     status=status, step=step) from exc
        if status == 0:
            raise GrafanaUnreachableError(f"Grafana at {url} could not be reached ({step}): {text}",
                                          step=step) from exc
        raise GrafanaError(f"Grafana at {url} refused {step}: HTTP {status} {text}", status=status,
                           step=step) from exc
    except OSError as exc:   # niquests' ConnectionError and friends derive from OSError (IOError)
        raise GrafanaUnreachableError(f"Grafana at {url} could not be reached ({step}): {exc}", step=step) from exc


def _exists(step: str, url: str, fn: Callable[[], Any]) -> bool:
    try:
        _call(step, url, fn)
    except GrafanaError as exc:
        if exc.status == 404:
            return False
        raise
    return True


def push(url: str, *, token: str | None = None, dsn: str | None = None, password: str | None = None,
         timescaledb: bool = False, folder_uid: str = FOLDER_UID, folder_title: str = FOLDER_TITLE,
         timeout: float = 10.0) -> PushResult:
    """Push the data source, the folder and every dashboard to the Grafana at ``url``."""
    try:
        from grafana_client import GrafanaApi
    except ImportError as exc:  # a dependency in pyproject; say so if an install lacks it
        raise ConfigError("pushing dashboards needs the grafana-client package (pip install grafana-client)") from exc
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"Grafana URL must start with http:// or https://, got {url!r}")
    shown = _redact(url)
    api = GrafanaApi.from_url(url=url, credential=token or None, timeout=timeout)
    result = PushResult()

    body = datasource_body(dsn, password=password, timescaledb=timescaledb)
    if _exists("read data source", shown, lambda: api.datasource.get_datasource_by_uid(DATASOURCE_UID)):
        _call("update data source", shown, lambda: api.datasource.update_datasource_by_uid(DATASOURCE_UID, body))
        result.datasource = "updated"
    else:
        _call("create data source", shown, lambda: api.datasource.create_datasource(body))
        result.datasource = "created"

    if _exists("read folder", shown, lambda: api.folder.get_folder(folder_uid)):
        result.folder = "exists"
    else:
        _call("create folder", shown, lambda: api.folder.create_folder(folder_title, uid=folder_uid))
        result.folder = "created"

    for board in all_dashboards():
        board = {**board, "id": None}   # Grafana matches on uid; an id from another instance would be wrong
        payload = {"dashboard": board, "folderUid": folder_uid, "overwrite": True, "message": PUSH_MESSAGE}
        answer = _call(f"save dashboard {board['uid']}", shown, lambda p=payload: api.dashboard.update_dashboard(p))
        result.dashboards[board["uid"]] = int((answer or {}).get("version") or 0)
    log.info("pushed to %s: data source %s, folder %s, dashboards %s", shown, result.datasource, result.folder,
             sorted(result.dashboards))
    return result


def _redact(url: str) -> str:
    """The URL without a password, for messages."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def run_command(args: argparse.Namespace) -> int:
    """What ``traffic dashboards push`` runs."""
    from traffic.config import load_settings

    dsn = args.dsn or load_settings(getattr(args, "config", None)).database.dsn
    token = os.environ.get(args.token_env) or None
    password = os.environ.get(PASSWORD_ENV) or None
    if password is None:
        log.warning("$%s not set: the data source is pushed without a password (Grafana keeps the one it has)",
                    PASSWORD_ENV)
    result = push(args.url, token=token, dsn=dsn, password=password, timescaledb=args.timescaledb,
                  folder_uid=args.folder_uid, folder_title=args.folder_title, timeout=args.timeout)
    sys.stdout.write(f"data source {DATASOURCE_UID}: {result.datasource}\nfolder {args.folder_uid}: {result.folder}\n")
    for uid, version in result.dashboards.items():
        sys.stdout.write(f"dashboard {uid}: version {version}\n")
    return 0


def add_commands(dashboards_subparsers: Any) -> None:
    """Register ``push`` under ``traffic dashboards`` (pass the ``dashboards`` parser's subparsers)."""
    p = dashboards_subparsers.add_parser(
        "push", help="push the data source, folder and dashboards to a running Grafana (HTTP API)")
    p.add_argument("--url", required=True, help="Grafana base URL, e.g. http://grafana:3000 (user:pass@ allowed)")
    p.add_argument("--token-env", default=TOKEN_ENV,
                   help=f"environment variable holding a service-account token (default {TOKEN_ENV})")
    p.add_argument("--dsn", default=None, help="database the data source reads (default: the configured one)")
    p.add_argument("--folder-uid", default=FOLDER_UID)
    p.add_argument("--folder-title", default=FOLDER_TITLE)
    p.add_argument("--timescaledb", action="store_true", help="tell Grafana the database has TimescaleDB")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per HTTP request")
    p.set_defaults(func=run_command)


__all__ = ["FOLDER_TITLE", "FOLDER_UID", "GrafanaAuthError", "GrafanaConflictError", "GrafanaError",
           "GrafanaServerError", "GrafanaUnreachableError", "PushResult", "add_commands", "all_dashboards",
           "datasource_body", "push", "run_command", "CORRIDOR_UID"]
