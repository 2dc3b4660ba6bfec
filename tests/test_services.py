"""Embedded services: real mosquitto and real PostgreSQL processes, started and stopped.

The state folders live under the system temp dir with mode 0755 because,
as root, PostgreSQL runs as the ``postgres`` user and must be able to reach
them (pytest's own tmp_path sits under a 0700 folder).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from dataclasses import replace
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest

from app.services import (
    PrivateBroker,
    PrivatePostgres,
    _pid_alive,
    ensure_services,
    find_free_port,
    mqtt_answers,
    port_open,
    postgres_bindir,
)
from traffic.config import Settings
from traffic.errors import ServiceError

pytestmark = pytest.mark.timeout(120)


def _need(binary: str) -> None:
    if shutil.which(binary) is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{binary} missing under CI")
        pytest.skip(f"{binary} not installed")


@pytest.fixture
def state_dir():
    path = Path(tempfile.mkdtemp(prefix="traffic-svc-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def _pg_template():
    """One initialised cluster per session, copied into each test's state dir (initdb costs seconds)."""
    try:
        postgres_bindir()
    except ServiceError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    base = Path(tempfile.mkdtemp(prefix="traffic-svc-template-"))
    base.chmod(0o755)
    try:
        with PrivatePostgres(base) as template:  # initdb + the traffic database
            assert template.initialised
        yield base / "pg"
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def need_postgres(_pg_template, state_dir):
    """A state dir that already holds an initialised cluster (a copy of the session template)."""
    # cp -a keeps ownership (the cluster belongs to 'postgres' when we run as root)
    subprocess.run(["cp", "-a", str(_pg_template), str(state_dir / "pg")], check=True)


def _mqtt_roundtrip(url: str) -> bytes:
    """Publish a retained message, read it back with a second client; return the payload."""
    port = int(url.rsplit(":", 1)[1])
    topic = f"test/{uuid.uuid4().hex}"
    payload = uuid.uuid4().bytes
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    pub.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
    pub.loop_stop()
    pub.disconnect()

    got: list[bytes] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    sub.on_message = lambda c, u, msg: got.append(msg.payload)
    sub.connect("127.0.0.1", port)
    sub.subscribe(topic, qos=1)
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        sub.loop(0.1)
    sub.disconnect()
    assert got == [payload]
    return got[0]


def test_find_free_port_is_bindable():
    port = find_free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
    assert 1024 < port < 65536


def test_ensure_services_starts_private_ones_and_stops_them(state_dir, need_postgres):
    _need("mosquitto")
    settings = replace(Settings(), state_dir=str(state_dir))
    with ensure_services(settings) as handles:
        assert handles.broker is not None and handles.postgres is not None
        broker_pid, pg_pid = handles.broker.pid, handles.postgres.pid
        broker_port, pg_port = handles.broker.port, handles.postgres.port
        assert broker_port != 1883 and pg_port != 5432  # private, not the system services
        _mqtt_roundtrip(handles.mqtt_url)
        with psycopg.connect(handles.database_dsn) as conn:
            row = conn.execute("SELECT current_database(), inet_server_port()").fetchone()
        assert row == ("traffic", pg_port)
        applied = handles.apply(settings)
        assert applied.mqtt.url == handles.mqtt_url and applied.database.dsn == handles.database_dsn
    assert broker_pid is not None and pg_pid is not None
    assert not _pid_alive(broker_pid)
    deadline = time.monotonic() + 5
    while _pid_alive(pg_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _pid_alive(pg_pid)
    assert not port_open(broker_port)
    assert not port_open(pg_port)
    handles.close()  # idempotent


def test_ensure_services_uses_configured_endpoints_without_starting(state_dir):
    settings = replace(
        Settings(),
        state_dir=str(state_dir),
        mqtt=replace(Settings().mqtt, url="mqtt://broker.example:1883"),
        database=replace(Settings().database, dsn="postgresql://u@db.example/x"),
    )
    handles = ensure_services(settings)
    assert (handles.mqtt_url, handles.database_dsn) == ("mqtt://broker.example:1883", "postgresql://u@db.example/x")
    assert handles.broker is None and handles.postgres is None
    assert list(state_dir.iterdir()) == []  # nothing started, nothing written
    handles.close()


def test_postgres_restart_reuses_the_cluster(state_dir, need_postgres):
    first = PrivatePostgres(state_dir)
    with first:
        with psycopg.connect(first.dsn) as conn:
            conn.execute("CREATE TABLE kept (v text)")
            conn.execute("INSERT INTO kept VALUES ('survives restart')")
        first_port = first.port
    version_file = state_dir / "pg" / "PG_VERSION"
    stamp = version_file.stat().st_mtime_ns
    second = PrivatePostgres(state_dir)
    assert second.initialised
    with second:
        with psycopg.connect(second.dsn) as conn:
            assert conn.execute("SELECT v FROM kept").fetchall() == [("survives restart",)]
        assert port_open(second.port)
    assert version_file.stat().st_mtime_ns == stamp  # no second initdb
    assert not port_open(second.port) and not port_open(first_port)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the cluster to the postgres user")
def test_postgres_as_root_in_a_private_folder_falls_back_to_a_reachable_one(state_dir, need_postgres):
    hidden = state_dir / "home"
    hidden.mkdir(mode=0o700)
    server = PrivatePostgres(hidden / "state")
    try:
        with server:
            assert not server.data_dir.is_relative_to(hidden)
            with psycopg.connect(server.dsn) as conn:
                assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
        assert PrivatePostgres(hidden / "state").data_dir.parent == hidden.resolve() / "state"
    finally:
        shutil.rmtree(server.data_dir.parent, ignore_errors=True)


def test_broker_bad_config_raises_service_error_with_log_tail(state_dir):
    _need("mosquitto")
    broker = PrivateBroker(state_dir, config_lines=["no_such_option 42"])
    with pytest.raises(ServiceError) as info:
        broker.start()
    assert "no_such_option" in str(info.value)
    assert not broker.running


def test_broker_port_in_use_raises_service_error(state_dir):
    _need("mosquitto")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        broker = PrivateBroker(state_dir, port=port)
        with pytest.raises(ServiceError, match="in use"):
            broker.start()
        assert not broker.running


def test_postgres_port_in_use_raises_service_error(state_dir, need_postgres):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        server = PrivatePostgres(state_dir, port=port)
        with pytest.raises(ServiceError, match="in use"):
            server.start()
        assert not server.running


def test_mqtt_probe_tells_a_broker_from_another_listener(state_dir):
    _need("mosquitto")
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        assert not mqtt_answers(other.getsockname()[1], timeout_s=0.3)
    with PrivateBroker(state_dir) as broker:
        assert mqtt_answers(broker.port)


def test_broker_keeps_retained_messages_across_restart(state_dir):
    _need("mosquitto")
    with PrivateBroker(state_dir) as broker:
        payload = _mqtt_roundtrip(broker.url)
    with PrivateBroker(state_dir) as broker:
        port = broker.port
        got: list[bytes] = []
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        sub.on_message = lambda c, u, msg: got.append(msg.payload)
        sub.connect("127.0.0.1", port)
        sub.subscribe("test/#", qos=1)
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            sub.loop(0.1)
        sub.disconnect()
    assert got == [payload]


def test_sigterm_leaves_no_stray_processes(state_dir, need_postgres):
    """A process that is terminated mid-run still stops both services (atexit + SIGTERM hook)."""
    _need("mosquitto")
    child = textwrap.dedent(
        f"""
        import sys, time
        from dataclasses import replace
        from traffic.config import Settings
        from app.services import ensure_services
        h = ensure_services(replace(Settings(), state_dir={str(state_dir)!r}))
        print(h.broker.pid, h.postgres.pid, h.broker.port, h.postgres.port, flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line, "child did not start the services"
        broker_pid, pg_pid, broker_port, pg_port = (int(x) for x in line.split())
        assert _pid_alive(broker_pid) and _pid_alive(pg_pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 5
    while (_pid_alive(broker_pid) or _pid_alive(pg_pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _pid_alive(broker_pid) and not _pid_alive(pg_pid)
    assert not port_open(broker_port) and not port_open(pg_port)


def test_after_kill_9_broker_dies_and_next_run_takes_over_the_cluster(state_dir, need_postgres):
    """SIGKILL skips every cleanup: the broker still dies (parent-death signal) and the
    postmaster left behind is stopped and restarted by the next run on the same folder."""
    _need("mosquitto")
    child = textwrap.dedent(
        f"""
        import time
        from dataclasses import replace
        from traffic.config import Settings
        from app.services import ensure_services
        h = ensure_services(replace(Settings(), state_dir={str(state_dir)!r}))
        print(h.broker.pid, h.postgres.pid, flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        broker_pid, orphan_pid = (int(x) for x in proc.stdout.readline().split())
    finally:
        proc.kill()
        proc.wait()
    try:
        deadline = time.monotonic() + 5
        while _pid_alive(broker_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _pid_alive(broker_pid)
        assert _pid_alive(orphan_pid)  # pg_ctl daemonised it: only the next run can clean up
        with PrivatePostgres(state_dir) as server:
            assert not _pid_alive(orphan_pid)
            assert server.pid != orphan_pid
            with psycopg.connect(server.dsn) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
            new_pid = server.pid
        assert new_pid is not None and not _pid_alive(new_pid)
    finally:  # never leave our own processes behind when an assertion fails
        for pid, sig in ((broker_pid, signal.SIGTERM), (orphan_pid, signal.SIGINT)):
            if _pid_alive(pid):
                os.kill(pid, sig)
