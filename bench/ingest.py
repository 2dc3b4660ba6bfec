"""Benchmark: detector records one ingest worker stores per second, against a raw COPY.

All in one run, on the same rows (R count reports x D detectors) into an
empty ``detector_counts`` each time:

1. **raw COPY from a file**: the rows written to a text COPY file, then
   ``COPY detector_counts FROM STDIN`` streaming that file (what ``psql
   \\copy`` does): the ceiling, no decoding, no dedupe.
2. **CountStore.write_counts**: the store alone (optimistic COPY, falling
   back to staging + ``ON CONFLICT DO NOTHING`` on a duplicate), batches of
   the service's size.
3. **IngestService, backlog**: the reports are published first to the
   worker's persistent session (worker offline; the broker queues them), then
   the worker starts and is timed until every record is in PostgreSQL: one
   worker's own rate (MQTT receive, validate, COPY, ack), with the publisher
   not competing for the CPU.
4. **IngestService, live**: a publisher process sends while the worker runs.

The broker is a private Mosquitto (``app.services.PrivateBroker``) with
``max_queued_messages 0``, because Mosquitto's default of 1000 queued QoS 1
messages per session would drop the backlog (that is production broker
configuration too: docs/pipeline.md). Use ``--mqtt-url`` for another broker.
Prints a markdown table; every path must store exactly R x D rows.

Usage: ``.venv/bin/python bench/ingest.py [--reports 6000] [--detectors 16]``
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from psycopg import sql

from app.services import PrivateBroker
from sensors.ingest import IngestService
from sensors.records import CountRow
from sensors.store import COUNT_COLUMNS, CountStore, _TextEncoder
from sensors.worker import tune_gc
from traffic import db, topics
from traffic.config import IngestSettings, MqttSettings, Settings
from traffic.messages import CountRecord, CountReport

log = logging.getLogger("bench.ingest")
T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
BROKER_CONFIG = ("max_queued_messages 0", "max_inflight_messages 0")
CPU_SECONDS: dict[str, float] = {}   # worker process CPU (all threads) while draining the backlog


def make_reports(n: int, controllers: int, detectors: int) -> list[CountReport]:
    out = []
    for i in range(n):
        cid, minute = f"c{i % controllers:04d}", i // controllers
        counts = [(i * 7 + j) % 40 for j in range(detectors)]
        out.append(CountReport(cid, minute, T0 + timedelta(minutes=minute), 60, tuple(
            CountRecord(f"d{j:02d}", c, float((i + j) % 90), c * 3 // 4) for j, c in enumerate(counts))))
    return out


def rows_of(reports: list[CountReport], received_at: datetime) -> list[CountRow]:
    return [CountRow(r.controller_id, rec.detector_id, r.interval_start, r.interval_s, rec.count,
                     rec.occupancy_pct, rec.motorcycle_count, received_at) for r in reports for rec in r.records]


def _publisher(mqtt_url: str, site: str, n: int, controllers: int, detectors: int,
               ready: Any, go: Any) -> None:
    """Child process: publish every report at QoS 1 and wait for the broker's acks."""
    payloads = [(topics.topic(site, r.controller_id, topics.COUNTS), r.to_json())
                for r in make_reports(n, controllers, detectors)]
    mq = MqttSettings(url=mqtt_url)
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{site}", protocol=mqtt.MQTTv5)
    pub.max_inflight_messages_set(500)
    pub.max_queued_messages_set(0)
    pub.connect(mq.host, mq.port)
    pub.loop_start()
    ready.set()
    go.wait()
    infos = [pub.publish(topic, payload, qos=1) for topic, payload in payloads]
    for info in infos:
        info.wait_for_publish(120)
    pub.disconnect()
    pub.loop_stop()


def _run_publisher(mqtt_url: str, site: str, n: int, controllers: int, detectors: int) -> tuple[Any, Any]:
    ctx = multiprocessing.get_context("spawn")
    ready, go = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_publisher, args=(mqtt_url, site, n, controllers, detectors, ready, go), daemon=True)
    child.start()
    if not ready.wait(60):
        child.terminate()
        raise RuntimeError("publisher did not start")
    return child, go


def _service(dsn: str, mqtt_url: str, site: str, state: str) -> IngestService:
    settings = Settings(state_dir=state, mqtt=MqttSettings(url=mqtt_url), ingest=IngestSettings())
    return IngestService(settings, dsn=dsn, site=site, client_id=f"bench-{site}", session_expiry_s=600)


def _wait_stored(svc: IngestService, expected: int, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while (stats := svc.stats).stored < expected:
        if time.monotonic() > deadline or stats.dead_lettered:
            raise RuntimeError(f"only {stats.stored} of {expected} records stored: {stats}")
        time.sleep(0.002)


def bench_backlog(dsn: str, mqtt_url: str, n: int, controllers: int, detectors: int) -> float:
    """Queue everything in the worker's session, then time the worker draining it."""
    truncate(dsn)
    site = f"bench{uuid.uuid4().hex[:8]}"
    state = tempfile.mkdtemp(prefix="bench-ingest-")
    svc = _service(dsn, mqtt_url, site, state)
    svc.start()          # creates the session and its subscription
    svc.stop()           # session kept: the broker queues for it
    child, go = _run_publisher(mqtt_url, site, n, controllers, detectors)
    go.set()
    child.join(300)
    svc = _service(dsn, mqtt_url, site, state)
    t0, c0 = time.perf_counter(), time.process_time()
    svc.start()
    try:
        _wait_stored(svc, n * detectors)
        elapsed = time.perf_counter() - t0
        CPU_SECONDS["backlog"] = time.process_time() - c0
        return elapsed
    finally:
        svc.stop(end_session=True)


def bench_live(dsn: str, mqtt_url: str, n: int, controllers: int, detectors: int) -> float:
    """Publisher (own process) and worker at the same time."""
    truncate(dsn)
    site = f"bench{uuid.uuid4().hex[:8]}"
    svc = _service(dsn, mqtt_url, site, tempfile.mkdtemp(prefix="bench-ingest-"))
    svc.start()
    child = None
    try:
        child, go = _run_publisher(mqtt_url, site, n, controllers, detectors)
        t0 = time.perf_counter()
        go.set()
        _wait_stored(svc, n * detectors)
        return time.perf_counter() - t0
    finally:
        if child is not None:
            child.join(30)
            if child.is_alive():
                child.terminate()
        svc.stop(end_session=True)


def truncate(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("TRUNCATE detector_counts")


def stored(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM detector_counts").fetchone()
    return int(row[0]) if row else 0


def bench_raw_copy(dsn: str, rows: list[CountRow], workdir: Path) -> float:
    """COPY the rows from a text file (written beforehand, not timed) in one transaction."""
    truncate(dsn)
    path = workdir / "rows.copy"
    path.write_bytes(_TextEncoder().counts(rows))
    cols = sql.SQL(", ").join(map(sql.Identifier, COUNT_COLUMNS))
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT ensure_partitions(%s, %s)", (min(r.interval_start for r in rows),
                                                            max(r.interval_start for r in rows)))
        conn.commit()
        t0 = time.perf_counter()
        with conn.cursor() as cur, cur.copy(sql.SQL("COPY detector_counts ({}) FROM STDIN").format(cols)) as copy:
            with path.open("rb") as f:
                while block := f.read(1 << 20):
                    copy.write(block)
        conn.commit()
        return time.perf_counter() - t0


def bench_store(dsn: str, rows: list[CountRow], batch: int) -> float:
    truncate(dsn)
    with CountStore(dsn) as store:
        store.ping()
        t0 = time.perf_counter()
        for k in range(0, len(rows), batch):
            store.write_counts(rows[k:k + batch])
        return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=6000)
    parser.add_argument("--controllers", type=int, default=500)
    parser.add_argument("--detectors", type=int, default=16)
    parser.add_argument("--admin-dsn", default=os.environ.get("TRAFFIC_TEST_ADMIN_DSN",
                                                              "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--mqtt-url", default="", help="broker to use (default: a private Mosquitto)")
    parser.add_argument("--skip-live", action="store_true")
    args = parser.parse_args(argv)
    tune_gc()  # as the worker process (python -m sensors.worker) does
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    name = f"bench_ingest_{uuid.uuid4().hex[:8]}"
    db.create_database(args.admin_dsn, name)
    dsn = urlparse(args.admin_dsn)._replace(path=f"/{name}").geturl()
    workdir = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    broker = None
    try:
        mqtt_url = args.mqtt_url
        if not mqtt_url:
            broker = PrivateBroker(workdir, config_lines=BROKER_CONFIG)
            broker.start()
            mqtt_url = broker.url
        db.migrate(dsn)
        rows = rows_of(make_reports(args.reports, args.controllers, args.detectors), datetime.now(UTC))
        n = len(rows)
        paths: list[tuple[str, Any]] = [
            ("raw COPY from a file (text, one transaction)", lambda: bench_raw_copy(dsn, rows, workdir)),
            ("CountStore.write_counts, 5000-row batches", lambda: bench_store(dsn, rows, 5000)),
            ("IngestService, one worker, backlog in its session",
             lambda: bench_backlog(dsn, mqtt_url, args.reports, args.controllers, args.detectors)),
        ]
        if not args.skip_live:
            paths.append(("IngestService, one worker, publisher running alongside",
                          lambda: bench_live(dsn, mqtt_url, args.reports, args.controllers, args.detectors)))
        results = []
        for label, run in paths:
            secs = run()
            got = stored(dsn)
            if got != n:
                raise RuntimeError(f"{label}: stored {got} rows, expected {n}")
            results.append((label, secs))
    finally:
        if broker is not None:
            broker.stop()
        db.drop_database(args.admin_dsn, name)

    raw = results[0][1]
    out = sys.stdout
    out.write(f"\n{args.reports} count reports x {args.detectors} detectors = {n} records "
              f"({args.controllers} controllers); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n\n")
    out.write("| path | records | seconds | records/s | vs raw COPY |\n|---|---:|---:|---:|---:|\n")
    for label, secs in results:
        out.write(f"| {label} | {n} | {secs:.3f} | {n / secs:,.0f} | {raw / secs:.2f}x |\n")
    if "backlog" in CPU_SECONDS:
        cpu = CPU_SECONDS["backlog"]
        out.write(f"\nWorker CPU while draining the backlog: {cpu:.2f} s of CPU for {n} records = "
                  f"{n / cpu:,.0f} records per CPU-second (what one dedicated core would sustain).\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
