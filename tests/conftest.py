"""Shared fixtures: a real PostgreSQL database and a real Mosquitto broker.

The suite talks to real services. Defaults match the local machine
(PostgreSQL on 127.0.0.1:5432 with trust auth, Mosquitto on 127.0.0.1:1883);
override with ``TRAFFIC_TEST_ADMIN_DSN`` and ``TRAFFIC_TEST_MQTT_URL``. When a
service is unreachable the tests that need it are skipped with the reason,
except under CI (``CI=true``), where that is a failure: CI must exercise them.
"""

from __future__ import annotations

import os
import socket
import uuid
from urllib.parse import urlparse

import pytest

ADMIN_DSN = os.environ.get("TRAFFIC_TEST_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/test")
MQTT_URL = os.environ.get("TRAFFIC_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")


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
