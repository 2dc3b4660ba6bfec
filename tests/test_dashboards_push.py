"""Contract of ``traffic dashboards push`` against a fake Grafana HTTP API started by the test.

The fake (http.server on 127.0.0.1, a free port) answers like Grafana 11 and
records every request: method, path, JSON body, Authorization header. The
tests assert the exact calls grafana-client makes for us, and that each
kind of failure becomes its own TrafficError subclass.
"""

from __future__ import annotations

import argparse
import base64
import json
import pickle
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from dashboards import build, push
from dashboards.boards import BOARDS
from traffic.errors import TrafficError

DSN = "postgresql://svc@db.example:6543/corridor?sslmode=require"


class FakeGrafana:
    """Records requests; ``routes[(method, path)] = (status, body)`` overrides the default answers."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.routes: dict[tuple[str, str], tuple[int, Any]] = {}
        self.datasources: dict[str, dict] = {}
        self.folders: dict[str, dict] = {}
        self.versions: dict[str, int] = {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:   # keep test output quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                fake.requests.append({"method": self.command, "path": self.path, "json": body,
                                      "auth": self.headers.get("Authorization")})
                status, answer = fake.answer(self.command, self.path, body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if (method, path) in self.routes:
            return self.routes[(method, path)]
        if method == "GET" and path.startswith("/api/datasources/uid/"):
            uid = path.rsplit("/", 1)[1]
            return (200, self.datasources[uid]) if uid in self.datasources else (
                404, {"message": "Data source not found"})
        if method == "POST" and path == "/api/datasources":
            self.datasources[body["uid"]] = {**body, "id": 1}
            return 200, {"id": 1, "message": "Datasource added", "name": body["name"], "datasource": body}
        if method == "PUT" and path.startswith("/api/datasources/uid/"):
            self.datasources[path.rsplit("/", 1)[1]] = body
            return 200, {"id": 1, "message": "Datasource updated", "name": body["name"]}
        if method == "GET" and path.startswith("/api/folders/"):
            uid = path.rsplit("/", 1)[1]
            return (200, self.folders[uid]) if uid in self.folders else (404, {"message": "folder not found"})
        if method == "POST" and path == "/api/folders":
            self.folders[body["uid"]] = {"id": 7, "uid": body["uid"], "title": body["title"]}
            return 200, self.folders[body["uid"]]
        if method == "POST" and path == "/api/dashboards/db":
            uid = body["dashboard"]["uid"]
            self.versions[uid] = self.versions.get(uid, 0) + 1
            return 200, {"id": 10, "uid": uid, "status": "success", "version": self.versions[uid],
                         "url": f"/d/{uid}/x"}
        return 404, {"message": "Not found"}

    def calls(self) -> list[tuple[str, str]]:
        return [(r["method"], r["path"]) for r in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def grafana():
    fake = FakeGrafana()
    try:
        yield fake
    finally:
        fake.close()


DASHBOARD_UIDS = [build.CORRIDOR_UID, *BOARDS]


def test_first_push_creates_the_data_source_the_folder_and_every_dashboard(grafana):
    result = push.push(grafana.url, token="glsa_test", dsn=DSN, password="pw")
    assert grafana.calls() == [
        ("GET", f"/api/datasources/uid/{build.DATASOURCE_UID}"),
        ("POST", "/api/datasources"),
        ("GET", "/api/folders/traffic"),
        ("POST", "/api/folders"),
        *[("POST", "/api/dashboards/db")] * len(DASHBOARD_UIDS),
    ]
    assert all(r["auth"] == "Bearer glsa_test" for r in grafana.requests)
    datasource = grafana.requests[1]["json"]
    assert datasource == {
        "name": build.DATASOURCE_NAME, "type": "grafana-postgresql-datasource", "uid": build.DATASOURCE_UID,
        "access": "proxy", "url": "db.example:6543", "user": build.READ_ONLY_ROLE, "isDefault": True,
        "jsonData": {"database": "corridor", "sslmode": "require", "postgresVersion": 1500, "timescaledb": False,
                     "timeInterval": "1m"},
        "secureJsonData": {"password": "pw"},
    }
    assert grafana.requests[3]["json"] == {"title": "Traffic", "uid": "traffic"}
    saved = [r["json"] for r in grafana.requests[4:]]
    assert [s["dashboard"]["uid"] for s in saved] == DASHBOARD_UIDS
    expected = {b["uid"]: b for b in push.all_dashboards()}
    for body in saved:
        assert set(body) == {"dashboard", "folderUid", "overwrite", "message"}
        assert body["folderUid"] == "traffic" and body["overwrite"] is True
        assert body["dashboard"] == {**expected[body["dashboard"]["uid"]], "id": None}
    assert result == push.PushResult("created", "created", {uid: 1 for uid in DASHBOARD_UIDS})


def test_second_push_updates_in_place(grafana):
    push.push(grafana.url, token="t", dsn=DSN)
    del grafana.requests[:]
    result = push.push(grafana.url, token="t", dsn=DSN)
    assert grafana.calls() == [
        ("GET", f"/api/datasources/uid/{build.DATASOURCE_UID}"),
        ("PUT", f"/api/datasources/uid/{build.DATASOURCE_UID}"),
        ("GET", "/api/folders/traffic"),
        *[("POST", "/api/dashboards/db")] * len(DASHBOARD_UIDS),
    ]
    assert "secureJsonData" not in grafana.requests[1]["json"]     # no password given: Grafana keeps its own
    assert result.datasource == "updated" and result.folder == "exists"
    assert set(result.dashboards.values()) == {2}


def test_basic_auth_from_the_url_and_the_cli_command(grafana, monkeypatch, capsys):
    url = grafana.url.replace("http://", "http://admin:s3cret@")
    parser = argparse.ArgumentParser()
    push.add_commands(parser.add_subparsers(dest="dash_command"))
    args = parser.parse_args(["push", "--url", url, "--dsn", DSN, "--timescaledb"])
    monkeypatch.delenv("TRAFFIC_GRAFANA_TOKEN", raising=False)
    monkeypatch.setenv(build.PASSWORD_ENV, "from-env")
    assert args.func(args) == 0
    assert grafana.requests[0]["auth"] == "Basic " + base64.b64encode(b"admin:s3cret").decode()
    assert grafana.requests[1]["json"]["jsonData"]["timescaledb"] is True
    assert grafana.requests[1]["json"]["secureJsonData"] == {"password": "from-env"}
    out = capsys.readouterr().out
    assert "data source traffic-pg: created" in out and f"dashboard {build.CORRIDOR_UID}: version 1" in out


@pytest.mark.parametrize("route, status, body, error", [
    (("GET", f"/api/datasources/uid/{build.DATASOURCE_UID}"), 401,
     {"message": "invalid API key"}, push.GrafanaAuthError),
    (("POST", "/api/folders"), 403, {"message": "Access denied"}, push.GrafanaAuthError),
    (("POST", "/api/dashboards/db"), 412,
     {"message": "The dashboard has been changed by someone else", "status": "version-mismatch"},
     push.GrafanaConflictError),
    (("POST", "/api/datasources"), 500, {"message": "Internal Server Error"}, push.GrafanaServerError),
    (("POST", "/api/datasources"), 400, {"message": "bad request data"}, push.GrafanaError),
])
def test_each_failure_is_one_clear_error(grafana, route, status, body, error):
    grafana.routes[route] = (status, body)
    with pytest.raises(error) as info:
        push.push(grafana.url, token="t", dsn=DSN)
    exc = info.value
    assert type(exc) is error and isinstance(exc, TrafficError)
    assert exc.status == status and f"HTTP {status}" in str(exc) and body["message"] in str(exc)
    assert grafana.url in str(exc)
    assert grafana.calls()[-1] == route                        # stopped at the failing call
    again = pickle.loads(pickle.dumps(exc))
    assert type(again) is error and again.status == status and str(again) == str(exc)
    if status == 412:
        assert "version-mismatch" in str(exc)


def test_unreachable_grafana_and_a_password_in_the_url_is_not_repeated(grafana):
    port = grafana.server.server_address[1]
    grafana.close()
    with pytest.raises(push.GrafanaUnreachableError) as info:
        push.push(f"http://admin:s3cret@127.0.0.1:{port}", dsn=DSN, timeout=2)
    assert "s3cret" not in str(info.value) and "admin:***@127.0.0.1" in str(info.value)


def test_refuses_a_url_without_scheme():
    with pytest.raises(TrafficError, match="http:// or https://"):
        push.push("grafana:3000")
