"""Benchmark: detector records ingested per second, end to end vs a raw COPY.

Publishes N count reports (one per controller and minute, D detectors each)
to the broker from a separate process (as the field would), times until
IngestService has stored every record, then
loads the very same rows with a bare ``COPY`` into an empty
``detector_counts`` and, for reference, with ``CountStore.write_counts``
(COPY into staging + INSERT ... ON CONFLICT DO NOTHING, the idempotent path
the service uses). Prints a markdown table.

The publisher keeps at most ``--window`` (800) reports ahead of the service, since
Mosquitto's default ``max_queued_messages`` (1000) would otherwise drop QoS 1
messages queued for a slower subscriber; that is broker configuration, not
something ingest can fix, and production brokers should raise it.

Usage: ``.venv/bin/python bench/ingest.py [--reports 2000] [--detectors 16]``
Needs PostgreSQL (``TRAFFIC_TEST_ADMIN_DSN``, default postgres@127.0.0.1/test)
and Mosquitto (``TRAFFIC_TEST_MQTT_URL``, default mqtt://127.0.0.1:1883).
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
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from psycopg import sql

from sensors.ingest import IngestService
from sensors.records import CountRow
from sensors.store import COUNT_COLUMNS, COUNT_TYPES, CountStore
from traffic import db, topics
from traffic.config import IngestSettings, MqttSettings, Settings
from traffic.messages import CountRecord, CountReport

log = logging.getLogger("bench.ingest")
T0 = datetime(2026, 1, 5, 6, 0, tzinfo=timezone.utc)


def make_reports(n: int, controllers: int, detectors: int) -> list[CountReport]:
    out = []
    for i in range(n):
        cid, minute = f"c{i % controllers:03d}", i // controllers
        counts = [(i * 7 + j) % 40 for j in range(detectors)]
        out.append(CountReport(cid, minute, T0 + timedelta(minutes=minute), 60, tuple(
            CountRecord(f"d{j:02d}", c, float((i + j) % 90), c * 3 // 4) for j, c in enumerate(counts))))
    return out


def rows_of(reports: list[CountReport], received_at: datetime) -> list[CountRow]:
    return [CountRow(r.controller_id, rec.detector_id, r.interval_start, r.interval_s, rec.count,
                     rec.occupancy_pct, rec.motorcycle_count, received_at) for r in reports for rec in r.records]


def _publisher(mqtt_url: str, site: str, n: int, controllers: int, detectors: int, window: int,
               received: Any, ready: Any, go: Any) -> None:
    """Child process: publish the reports, staying at most ``window`` ahead of the service."""
    payloads = [(topics.topic(site, r.controller_id, topics.COUNTS), r.to_json())
                for r in make_reports(n, controllers, detectors)]
    mq = MqttSettings(url=mqtt_url)
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{site}", protocol=mqtt.MQTTv5)
    pub.max_inflight_messages_set(200)
    pub.max_queued_messages_set(0)
    pub.connect(mq.host, mq.port)
    pub.loop_start()
    ready.set()
    go.wait()
    infos = []
    for i, (topic, payload) in enumerate(payloads):
        while i - received.value >= window:
            time.sleep(0.0005)
        infos.append(pub.publish(topic, payload, qos=1))
    for info in infos:
        info.wait_for_publish(60)
    pub.disconnect()
    pub.loop_stop()


def bench_service(dsn: str, mqtt_url: str, n: int, controllers: int, detectors: int, window: int) -> float:
    """Publisher in its own process (as the field is), service in this one; time to all stored."""
    site = f"bench{uuid.uuid4().hex[:8]}"
    settings = Settings(state_dir=tempfile.mkdtemp(prefix="bench-ingest-"), mqtt=MqttSettings(url=mqtt_url),
                        ingest=IngestSettings())
    expected = n * detectors
    ctx = multiprocessing.get_context("spawn")
    received, ready, go = ctx.Value("q", 0, lock=False), ctx.Event(), ctx.Event()
    child = ctx.Process(target=_publisher, args=(mqtt_url, site, n, controllers, detectors, window,
                                                 received, ready, go), daemon=True)
    svc = IngestService(settings, dsn=dsn, site=site, client_id=f"bench-{site}", session_expiry_s=0)
    svc.start()
    try:
        child.start()
        if not ready.wait(60):
            raise RuntimeError("publisher did not start")
        t0 = time.perf_counter()
        go.set()
        deadline = time.monotonic() + 300
        while (stats := svc.stats).stored < expected:
            received.value = stats.received
            if time.monotonic() > deadline or stats.dead_lettered:
                raise RuntimeError(f"only {stats.stored} of {expected} records stored: {stats}")
            time.sleep(0.001)
        elapsed = time.perf_counter() - t0
        child.join(30)
        return elapsed
    finally:
        if child.is_alive():
            child.terminate()
        svc.stop()


def truncate(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("TRUNCATE detector_counts")


def bench_raw_copy(dsn: str, rows: list[CountRow]) -> float:
    truncate(dsn)
    cols = sql.SQL(", ").join(map(sql.Identifier, COUNT_COLUMNS))
    with psycopg.connect(dsn) as conn:
        t0 = time.perf_counter()
        query = sql.SQL("COPY detector_counts ({}) FROM STDIN (FORMAT BINARY)").format(cols)
        with conn.cursor() as cur, cur.copy(query) as copy:
            copy.set_types(list(COUNT_TYPES))
            for row in rows:
                copy.write_row(row)
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
    parser.add_argument("--reports", type=int, default=2000)
    parser.add_argument("--controllers", type=int, default=50)
    parser.add_argument("--detectors", type=int, default=16)
    parser.add_argument("--window", type=int, default=800, help="max reports published ahead of the service")
    parser.add_argument("--admin-dsn", default=os.environ.get("TRAFFIC_TEST_ADMIN_DSN",
                                                              "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--mqtt-url", default=os.environ.get("TRAFFIC_TEST_MQTT_URL", "mqtt://127.0.0.1:1883"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    name = f"bench_ingest_{uuid.uuid4().hex[:8]}"
    db.create_database(args.admin_dsn, name)
    dsn = urlparse(args.admin_dsn)._replace(path=f"/{name}").geturl()
    try:
        db.migrate(dsn)
        reports = make_reports(args.reports, args.controllers, args.detectors)
        rows = rows_of(reports, datetime.now(timezone.utc))
        n = len(rows)
        results = [
            ("IngestService end to end (MQTT QoS 1 -> COPY + dedupe)",
             bench_service(dsn, args.mqtt_url, args.reports, args.controllers, args.detectors, args.window)),
            ("CountStore.write_counts (COPY staging + ON CONFLICT), 5000-row batches", bench_store(dsn, rows, 5000)),
            ("raw binary COPY into detector_counts (one COPY)", bench_raw_copy(dsn, rows)),
        ]
    finally:
        db.drop_database(args.admin_dsn, name)

    raw = results[-1][1]
    out = sys.stdout
    out.write(f"\n{args.reports} count reports x {args.detectors} detectors = {n} records "
              f"({args.controllers} controllers)\n\n")
    out.write("| path | records | seconds | records/s | vs raw COPY |\n|---|---:|---:|---:|---:|\n")
    for label, secs in results:
        out.write(f"| {label} | {n} | {secs:.3f} | {n / secs:,.0f} | {raw / secs:.2f}x |\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
