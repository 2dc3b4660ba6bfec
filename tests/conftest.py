"""Shared fixtures: a real PostgreSQL database and a real Mosquitto broker.

The suite talks to real services. Defaults match the local machine
(PostgreSQL on 127.0.0.1:5432 with trust auth, Mosquitto on 127.0.0.1:1883);
override with ``TRAFFIC_TEST_ADMIN_DSN`` and ``TRAFFIC_TEST_MQTT_URL``. When a
service is unreachable the tests that need it are skipped with the reason,
except under CI (``CI=true``), where that is a failure: CI must exercise them.
"""

from __future__ import annotations

import ast
import functools
import os
import socket
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pytest

ADMIN_DSN = os.environ.get("TRAFFIC_TEST_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/test")
MQTT_URL = os.environ.get("TRAFFIC_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")


# --- markers: which tests need which service ---------------------------------
# `postgres` and `mqtt` follow the fixtures a test uses; `sumo` follows what its
# module imports (simulation, libsumo, traci, sumolib, the SUMO world or the
# closed loop) or the SUMO tools it calls, plus the modules below that run SUMO
# through the `traffic` CLI in a subprocess. Deselect with e.g. -m "not sumo".
_FIXTURE_MARKS = {"pg_dsn": "postgres", "mqtt_url": "mqtt"}
_SUMO_IMPORTS = ("simulation", "libsumo", "traci", "sumolib", "field_firmware_stubs.world_sumo",
                 "app.closed_loop", "app.demo", "app.sim_adaptive", "app.twin")
_SUMO_CALLS = ("sumo_binary", "SUMO_HOME")
_SUMO_BY_CLI = {"test_demo", "test_up", "test_services_e2e"}


@functools.cache
def _runs_sumo(path: str) -> bool:
    file = Path(path)
    if file.stem in _SUMO_BY_CLI:
        return True
    source = file.read_text(encoding="utf-8")
    if any(call in source for call in _SUMO_CALLS):
        return True
    for node in ast.walk(ast.parse(source)):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
        if any(n == m or n.startswith(m + ".") for n in names for m in _SUMO_IMPORTS):
            return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        for fixture, mark in _FIXTURE_MARKS.items():
            if fixture in fixtures:
                item.add_marker(mark)
        if item.path.suffix == ".py" and _runs_sumo(str(item.path)):
            item.add_marker("sumo")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"required service unavailable under CI: {reason}")
    pytest.skip(reason)


def _dsn_for(database: str) -> str:
    parsed = urlparse(ADMIN_DSN)
    return parsed._replace(path=f"/{database}").geturl()


@pytest.fixture
def pg_dsn():
    """A fresh, migrated database for one test; dropped afterwards."""
    from traffic import db
    from traffic.errors import StorageError

    name = f"traffic_test_{uuid.uuid4().hex[:10]}"
    try:
        db.create_database(ADMIN_DSN, name)
    except StorageError as exc:
        _unavailable(f"PostgreSQL at {ADMIN_DSN}: {exc}")
    dsn = _dsn_for(name)
    try:
        db.migrate(dsn)
        yield dsn
    finally:
        db.drop_database(ADMIN_DSN, name)


@pytest.fixture
def mqtt_url() -> str:
    """URL of a reachable broker (checked with a TCP connect)."""
    parsed = urlparse(MQTT_URL)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 1883), timeout=2):
            pass
    except OSError as exc:
        _unavailable(f"Mosquitto at {MQTT_URL}: {exc}")
    return MQTT_URL


@pytest.fixture
def settings(tmp_path, mqtt_url: str):
    """Ingest settings on the test broker: small, fast batches; state (spool) under ``tmp_path``."""
    from traffic.config import IngestSettings, MqttSettings, Settings

    return Settings(state_dir=str(tmp_path / "state"), mqtt=MqttSettings(url=mqtt_url),
                    ingest=IngestSettings(batch_max_rows=500, batch_max_delay_s=0.05))


@pytest.fixture
def site() -> str:
    """A unique MQTT site level so tests sharing one broker never see each other's traffic."""
    return f"t{uuid.uuid4().hex[:10]}"
