"""Fault tests: real broker, real database, real worker processes; every record reconciled.

Each test publishes a known set of count reports (``sensors.loadgen``: the
content is a function of controller, interval and detector), injects the
fault mid-stream, and then checks that the stored rows are exactly the
published ones: none lost, none twice (the primary key would refuse a
second copy, so "stored == published" and "sum of counts == expected sum"
together mean exactly once).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from app.services import PrivatePostgres, find_free_port, port_open, postgres_bindir
from sensors.ingest import IngestService
from sensors.loadgen import LoadGenerator, LoadResult, expected_total
from sensors.router import route
from traffic import db, topics
from traffic.config import IngestSettings, MqttSettings, Settings
from traffic.messages import CountRecord, CountReport

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------
# helpers

def eventually(check: Callable[[], bool], timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(step)
    return check()


class Worker:
    """``python -m sensors.worker`` as a child process (stats in a JSON file)."""

    def __init__(self, tmp: Path, name: str, *, mqtt_url: str, dsn: str, site: str, batch_delay_s: float = 0.2):
        self.name, self.tmp = name, tmp
        self.stats_file = tmp / f"{name}.stats.json"
        self.log = tmp / f"{name}.log"
        self.argv = [sys.executable, "-m", "sensors.worker", "--client-id", f"{site}-{name}", "--site", site,
                     "--mqtt-url", mqtt_url, "--dsn", dsn, "--spool-dir", str(tmp / f"{name}-spool"),
                     "--batch-max-delay-s", str(batch_delay_s), "--session-expiry-s", "600",
                     "--db-timeout-s", "1", "--replay-interval-s", "0.5", "--stats-every", "0.2",
                     "--stats-file", str(self.stats_file), "--log-level", "INFO"]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        self.stats_file.unlink(missing_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
        assert eventually(self.stats_file.exists, 30), f"{self.name} did not come up:\n{self.log.read_text()}"
        return self

    def stats(self) -> dict[str, int]:
        try:
            return json.loads(self.stats_file.read_text())
        except (OSError, ValueError):
            return {}

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> dict[str, int]:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.stats()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for w in started:
        w.stop()


def reconcile(dsn: str) -> tuple[int, int]:
    """(rows, sum of vehicle counts) in detector_counts."""
    with psycopg.connect(dsn) as conn:
        rows, total = conn.execute("SELECT count(*), coalesce(sum(vehicle_count), 0) FROM detector_counts").fetchone()
    return int(rows), int(total)


def publish_in_background(gen: LoadGenerator, intervals: int, **kw) -> tuple[threading.Thread, list[LoadResult]]:
    out: list[LoadResult] = []
    thread = threading.Thread(target=lambda: out.append(gen.run(intervals, **kw)), daemon=True)
    thread.start()
    return thread, out


def report_line(name: str, published: int, stored: int, total_ok: bool) -> None:
    lost = max(0, published - stored)
    sys.stderr.write(f"\n[fault] {name}: published={published} stored={stored} lost={lost} "
                     f"duplicated={max(0, stored - published)} sums_match={total_ok}\n")


# ---------------------------------------------------------------------------
# one of two workers killed with SIGKILL

def test_sigkill_of_one_of_two_workers_loses_nothing(tmp_path, pg_dsn, mqtt_url, site, workers):
    controllers, detectors, intervals = 120, 8, 8
    # w1 holds what it receives for up to 1.5 s before writing: at the kill it
    # certainly has received-but-unacknowledged messages.
    w1 = Worker(tmp_path, "w1", mqtt_url=mqtt_url, dsn=pg_dsn, site=site, batch_delay_s=1.5)
    w2 = Worker(tmp_path, "w2", mqtt_url=mqtt_url, dsn=pg_dsn, site=site)
    workers.extend([w1.start(), w2.start()])
    with LoadGenerator(MqttSettings(url=mqtt_url), site=site, controllers=controllers, detectors=detectors,
                       interval_s=1) as gen:
        thread, result = publish_in_background(gen, intervals)
        assert eventually(lambda: w1.stats().get("received", 0) > 50, 10)
        w1.kill()
        received_before_kill = w1.stats()["received"]
        stored_before_kill = w1.stats()["stored"]
        time.sleep(1.0)
        w1.start()                                    # a supervisor restarts it under the same session
        thread.join(60)
    published = result[0].records
    assert published == controllers * detectors * intervals and result[0].acked == result[0].messages
    expected = expected_total(controllers, detectors, range(intervals))
    assert eventually(lambda: reconcile(pg_dsn) == (published, expected), 30), reconcile(pg_dsn)
    s1, s2 = w1.stop(), w2.stop()
    stored, total = reconcile(pg_dsn)
    report_line("worker SIGKILL", published, stored, total == expected)
    assert received_before_kill * detectors > stored_before_kill      # it died holding unacked messages
    assert s2["stored"] > 0 and s1["stored"] > 0                      # both shared the load
    assert s1["dead_lettered"] == s2["dead_lettered"] == 0


# ---------------------------------------------------------------------------
# broker restarted mid-stream

class RestartableBroker:
    """Mosquitto with persistence on a fixed port, restartable at once.

    Not :class:`PrivateBroker`: its start refuses a port that still has
    TIME_WAIT sockets from the connections the old broker closed, while
    mosquitto itself binds with SO_REUSEADDR and can come straight back.
    """

    def __init__(self, tmp: Path) -> None:
        self.port = find_free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.dir = tmp / "mosquitto"
        self.dir.mkdir()
        self.conf = self.dir / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "persistence true",
                 f"persistence_location {self.dir}/", "max_queued_messages 0", "log_dest stderr",
                 "log_type error", "log_type warning"]
        if os.geteuid() == 0:
            lines.append("user root")
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with (self.dir / "log").open("ab") as log:
            self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)], stdout=log, stderr=log)
        assert eventually(lambda: port_open(self.port), 10), (self.dir / "log").read_text()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()                    # SIGTERM: mosquitto writes its persistence file
            self.proc.wait(10)


def test_broker_restart_loses_nothing(tmp_path, pg_dsn, workers):
    if shutil.which("mosquitto") is None:
        pytest.skip("mosquitto executable not installed")
    site = "brk"
    controllers, detectors = 100, 8
    broker = RestartableBroker(tmp_path)
    broker.start()
    try:
        url = broker.url
        w = Worker(tmp_path, "w", mqtt_url=url, dsn=pg_dsn, site=site, batch_delay_s=1.0)
        workers.append(w.start())
        with LoadGenerator(MqttSettings(url=url), site=site, controllers=controllers, detectors=detectors,
                           session_expiry_s=600) as gen:
            first = gen.run(6, real_time=False)       # all in the broker; the worker is still taking them
            assert first.acked == first.messages
            stored_at_stop = reconcile(pg_dsn)[0]
            broker.stop()                             # mosquitto saves queued and in-flight messages
            broker.start()                            # same port
            assert eventually(lambda: gen.connected, 15)
            second = gen.run(6, real_time=False, first_interval=6)
            assert second.acked == second.messages
        published = first.records + second.records
        expected = expected_total(controllers, detectors, range(12))
        assert eventually(lambda: reconcile(pg_dsn) == (published, expected), 40), reconcile(pg_dsn)
        stats = w.stop()
        stored, total = reconcile(pg_dsn)
        report_line("broker restart", published, stored, total == expected)
        assert stored_at_stop < first.records           # the restart hit messages still on their way
        assert stats["dead_lettered"] == 0
    finally:
        broker.stop()


# ---------------------------------------------------------------------------
# database stopped for 30 s

@pytest.mark.slow
def test_database_down_30_s_spools_and_replays_everything(tmp_path, mqtt_url, site, workers):
    controllers, detectors, intervals = 40, 8, 42
    pg = PrivatePostgres(tmp_path / "pgstate", port=find_free_port())
    pg.start()
    try:
        dsn = pg.dsn
        db.migrate(dsn)
        w = Worker(tmp_path, "w", mqtt_url=mqtt_url, dsn=dsn, site=site)
        workers.append(w.start())
        with LoadGenerator(MqttSettings(url=mqtt_url), site=site, controllers=controllers, detectors=detectors,
                           interval_s=1) as gen:
            thread, result = publish_in_background(gen, intervals)
            time.sleep(5)
            # pg_ctl on the cluster itself, not PrivatePostgres.stop()/start(): its
            # start refuses a port with TIME_WAIT sockets left by the connections
            # the server closed, while postgres binds with SO_REUSEADDR and can
            # come back on the same port (the worker's DSN) at once.
            bindir = postgres_bindir()
            pg._pg_ctl(bindir, "stop", "-m", "fast", "-w")  # noqa: SLF001
            down_at = time.monotonic()
            time.sleep(30)
            spooled_while_down = w.stats().get("spooled", 0)
            pg._pg_ctl(bindir, "start", "-w", "-l", str(pg.log_path))  # noqa: SLF001
            up_after = time.monotonic() - down_at
            thread.join(60)
        published = result[0].records
        expected = expected_total(controllers, detectors, range(intervals))
        assert eventually(lambda: reconcile(dsn) == (published, expected), 60), reconcile(dsn)
        stats = w.stop()
        stored, total = reconcile(dsn)
        report_line(f"database down {up_after:.0f} s", published, stored, total == expected)
        assert spooled_while_down > 0 and stats["replayed"] == stats["spooled"]
        assert not any((tmp_path / "w-spool").glob("*.batch.json"))
    finally:
        pg.stop()


# ---------------------------------------------------------------------------
# fuzz: random and malformed payloads

def _valid(controller: str, seq: int) -> dict:
    return json.loads(CountReport(controller, seq, datetime(2026, 3, 4, 17, seq % 60, tzinfo=UTC), 60,
                                  (CountRecord("d0", 3, 5.0, 1), CountRecord("d1", 4, 6.0))).to_json())


def fuzz_cases(n: int, site: str, seed: int = 7) -> list[tuple[str, bytes, str]]:
    """``n`` (topic, payload, kind) that must all be dead-lettered; every kind well represented."""
    rng = random.Random(seed)
    counts_topic = topics.topic(site, "c1", topics.COUNTS)
    odd = [None, True, -1, 2**64, 1.5, "x", [], {}, "2026-13-45T99:00:00Z", "\u0000", "😀" * 70]
    cases: list[tuple[str, bytes, str]] = []
    while len(cases) < n:
        kind = rng.choice(["random", "truncated", "wrong_type", "wrong_encoding", "wrong_topic", "wrong_schema",
                           "nested", "huge" if rng.random() < 0.01 else "random"])
        doc = _valid("c1", rng.randrange(1000))
        topic = counts_topic
        if kind == "random":
            payload = rng.randbytes(rng.randrange(0, 300))
        elif kind == "truncated":
            full = json.dumps(doc).encode()
            payload = full[:rng.randrange(0, len(full) - 1)]
        elif kind == "wrong_type":
            target = doc if rng.random() < 0.5 else doc["records"][rng.randrange(2)]
            target[rng.choice(sorted(target))] = rng.choice(odd)
            payload = json.dumps(doc).encode()
        elif kind == "wrong_encoding":
            doc["records"][0]["detector_id"] = "dé" + "ñ" * rng.randrange(1, 5)
            payload = json.dumps(doc, ensure_ascii=False).encode(rng.choice(["utf-16", "latin-1", "utf-32"]))
        elif kind == "wrong_topic":
            other = rng.choice(["c2", "BAD", "x" * 70])
            topic = f"tsc/v1/{site}/{other}/{topics.COUNTS}"
            payload = json.dumps(doc).encode()
        elif kind == "wrong_schema":
            doc["schema"] = rng.choice(["counts/2", "events/1", "", None])
            topic = rng.choice([counts_topic, topics.topic(site, "c1", topics.EVENTS)])
            payload = json.dumps(doc).encode()
        elif kind == "nested":
            depth = rng.randrange(10, 5000)
            payload = b"[" * depth + b"]" * rng.choice([0, depth])
        else:
            payload = b'{"schema":"counts/1","pad":"' + b"y" * rng.randrange(262_200, 400_000) + b'"}'
        batch = route(topic, payload, datetime.now(UTC), site=site)
        if batch.dead_letters:                      # a mutation can leave a report valid: not a fuzz case
            cases.append((topic, payload, kind))
    return cases


def test_fuzz_10000_payloads_in_process_all_dead_lettered_with_a_reason():
    site = "fuzz"
    cases = fuzz_cases(10_000, site)
    kinds = {k for _, _, k in cases}
    assert kinds >= {"random", "truncated", "wrong_type", "wrong_encoding", "wrong_topic", "wrong_schema",
                     "nested", "huge"}
    for topic, payload, _kind in cases:
        batch = route(topic, payload, datetime.now(UTC), site=site)
        assert len(batch) == 1 and len(batch.dead_letters) == 1
        letter = batch.dead_letters[0]
        assert letter.reason and letter.payload == payload[:len(letter.payload)]
        assert not letter.reason.startswith("internal error"), letter.reason   # every failure anticipated


@pytest.mark.parametrize("n", [2_000, pytest.param(10_000, marks=pytest.mark.slow)])
def test_fuzz_through_the_real_broker_every_payload_is_dead_lettered(tmp_path, pg_dsn, mqtt_url, site, n):
    cases = fuzz_cases(n, site, seed=11)
    settings = Settings(state_dir=str(tmp_path), mqtt=MqttSettings(url=mqtt_url),
                        ingest=IngestSettings(batch_max_delay_s=0.05))
    svc = IngestService(settings, dsn=pg_dsn, site=site, client_id=f"fuzz-{site}", session_expiry_s=60)
    svc.start()
    try:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"fuzzpub-{site}", protocol=mqtt.MQTTv5)
        mq = MqttSettings(url=mqtt_url)
        pub.max_queued_messages_set(0)
        pub.connect(mq.host, mq.port)
        pub.loop_start()
        infos = []
        for k, (topic, payload, _kind) in enumerate(cases):
            infos.append(pub.publish(topic, payload, qos=1))
            if k % 500 == 499:                       # stay under the shared broker's per-session queue limit
                assert eventually(lambda k=k: svc.stats.received >= k - 100, 20)
        good = CountReport("c1", 1, datetime(2026, 3, 4, 17, 0, tzinfo=UTC), 60,
                           (CountRecord("d0", 1, 1.0),))
        infos.append(pub.publish(topics.topic(site, "c1", topics.COUNTS), good.to_json(), qos=1))
        for info in infos:
            info.wait_for_publish(30)
        pub.disconnect()
        pub.loop_stop()
        assert eventually(lambda: svc.stats.received == len(cases) + 1 and svc.wait_idle(0.1), 60), svc.stats
        stats = svc.stats
    finally:
        svc.stop(end_session=True)
    with psycopg.connect(pg_dsn) as conn:
        letters = conn.execute("SELECT count(*), count(*) FILTER (WHERE reason <> '') FROM dead_letters").fetchone()
        stored = conn.execute("SELECT count(*) FROM detector_counts").fetchone()[0]
    assert stats.dead_lettered == len(cases) and letters == (len(cases), len(cases))
    assert stored == 1                                   # and the consumer went on after all of it
